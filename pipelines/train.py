"""Training pipeline entry: the same as `glintru train`, runnable as a plain script (and under `ray submit`).

One process:                 python pipelines/train.py --data data/ml-1m --model glintru
Ray Train, 2 workers:        python pipelines/train.py --data data/ml-1m --model glintru --workers 2
From a study's best config:  python pipelines/train.py --config ray_results/<experiment>/best_config.yaml --data data/ml-1m
Smoke test:                  python pipelines/train.py --smoke-test
On a cluster:                ray submit cluster.yaml pipelines/train.py -- --address auto --workers 4 --gpu --data ...
"""

import sys

from glintru.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
