"""Tuning pipeline entry: the same as `glintru tune`, runnable as a plain script (and under `ray submit`).

Local (starts a private Ray; `--num-cpus` sets its logical CPUs):
    python pipelines/tune.py --profile quick --data data/ml-1m
    python pipelines/tune.py --smoke-test
Resume an interrupted study:
    python pipelines/tune.py --resume ray_results/<experiment>
On a cluster (`ray submit` copies only this file to the head, where the project is installed by
cluster.yaml; `--address auto` joins the running cluster, never pass --num-cpus there):
    ray submit cluster.yaml pipelines/tune.py -- --address auto --data /home/ubuntu/data/ml-1m \
        --search-space /home/ubuntu/glintru/search_spaces/glintru.yaml --gpu \
        --storage-path s3://BUCKET/glintru --mlflow-uri http://MLFLOW-HOST:5000
"""

import sys

from glintru.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
