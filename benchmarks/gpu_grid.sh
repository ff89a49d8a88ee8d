#!/usr/bin/env bash
# The reproduction's runs on one lent GPU, as one prepared call (the runs share the GPU, one process each).
#
#   bash benchmarks/gpu_grid.sh smoke OUT        # ~3 min: the GPU's throughput table and 2 epochs of each run shape
#   bash benchmarks/gpu_grid.sh main OUT [SECS]  # the grid below, stopped after SECS seconds (default 480)
#
# Prepared data must already be in benchmarks/work/data/<dataset>/ (reproduce.py's --work-dir; it is
# prepared there from --data-root on the first run, e.g. on the CPU machine, and carried along), so the
# GPU machine needs no raw files. Every finished run writes its JSON to benchmarks/results/runs/ as on
# the CPU; what this call finished is packed into OUT/runs.tgz with the logs, to unpack in the
# repository root (`tar xzf OUT/runs.tgz`), with the files the end of this script lists. A run the
# deadline stops loses what its newest checkpoint does not hold: size the grid from the smoke's epoch
# times. PYTHON picks the interpreter (default python3); DEVICE=cpu, THROUGHPUT=0 (no throughput table) and SMOKE_SET="KEY=VALUE ..." (extra --set for the
# smoke's runs) try the script on a CPU.
set -u -o pipefail
mode=${1:?usage: gpu_grid.sh smoke|main OUT [SECS]}
out=${2:?usage: gpu_grid.sh smoke|main OUT [SECS]}
secs=${3:-480}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
for ds in ml-1m amazon-beauty amazon-video-games; do
    [[ -f benchmarks/work/data/$ds/manifest.json ]] || { echo "error: benchmarks/work/data/$ds: not prepared" >&2; exit 2; }
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
marker=$(mktemp)
# --data-root is only read for a dataset that is not prepared yet (never, after the check above)
rep=("$py" benchmarks/reproduce.py --data-root /nonexistent --device "${DEVICE:-cuda}" --threads 1)
extra=()
for kv in ${SMOKE_SET:-}; do extra+=(--set "$kv"); done

case $mode in
smoke)
    [[ ${THROUGHPUT:-1} == 0 ]] || $py benchmarks/throughput.py --data benchmarks/work/data/ml-1m --device "${DEVICE:-cuda}" --train-seconds 5 \
        --out "$out/throughput_gpu.json" 2>&1 | tee "$out/throughput.log"
    # two epochs of every shape the main grid trains, 12 runs at once (the main grid's load)
    timeout -k 10 240 "${rep[@]}" --plan models --datasets amazon-beauty --set target_weight=equal \
        --set precision=fp32 --set max_epochs=2 "${extra[@]}" --tag smoke --results-dir "$out/smoke" --jobs 6 \
        > "$out/smoke_beauty.log" 2>&1 &
    timeout -k 10 240 "${rep[@]}" --plan models --datasets ml-1m --set precision=bf16 --set target_weight=equal \
        --set window_overlap=150 --set max_epochs=2 "${extra[@]}" --tag smoke --results-dir "$out/smoke" \
        --jobs 6 > "$out/smoke_ml1m.log" 2>&1 &
    wait
    tar czf "$out/smoke.tgz" -C "$out" smoke 2>/dev/null
    tail -n 8 "$out"/smoke_*.log
    ;;
main)
    # The smoke (H200, 12 runs at once): 3-4 s per Beauty epoch, 2.5-4 s per ML-1M epoch of window 200,
    # NARM's attention at every position 24 s. 16 processes at once (the CLI check, 12 + 3 runs).
    stop=(timeout -s INT -k 20 "$secs")
    # the user's command on this GPU: `glintru train --gpu` (precision auto: bf16 on a GPU), two epochs
    "$py" -m glintru train --data benchmarks/work/data/amazon-beauty --model glintru --gpu --max-epochs 2 \
        --out "$(mktemp -d)/train" > "$out/cli_train_gpu.log" 2>&1 &
    # ML-1M with equal target weights and overlapping windows, every model at the protocol's defaults,
    # three seeds, bf16 like ML-1M's other runs (a finished run is skipped). NARM is the slowest (24 s
    # an epoch without the overlap, which reads 2.15x the positions): the deadline stops it and its
    # checkpoint comes back to resume.
    "${stop[@]}" "${rep[@]}" --plan models --datasets ml-1m --runs glintru sasrec sasrec_preln sasrec_1block \
        gru4rec narm --set precision=bf16 --set target_weight=equal --set window_overlap=150 \
        --tag equal_overlap150 --seeds 1 2 3 --jobs "${ML1M_JOBS:-12}" > "$out/ml1m_equal.log" 2>&1 &
    # the same family with the configurations tuned with equal weights on Beauty: GRU4Rec's and both
    # RecBole-block SASRecs' are their defaults (recorded as the runs above once those have finished),
    # so three runs train
    "${stop[@]}" "${rep[@]}" --plan models --datasets ml-1m --tuned benchmarks/tuned-equal --tuned-from amazon-beauty \
        --runs glintru sasrec_preln narm --set precision=bf16 --set window_overlap=150 --tag equal_overlap150 \
        --seeds 1 --jobs 3 > "$out/ml1m_tuned_equal.log" 2>&1 &
    wait
    tail -n 20 "$out"/ml1m_equal.log "$out"/ml1m_tuned_equal.log
    ;;
*)
    echo "error: mode $mode: expected smoke or main" >&2
    exit 2
    ;;
esac
# What comes back from a lent machine is at most 8 files of at most 16 MB each, 64 MB in all: runs.tgz
# (the new result JSONs with their test users' ranks, which paired_users.py and history_masking.py
# read, and every log), then the newest checkpoint of each run the deadline stopped (to resume it
# elsewhere: `tar xzf` in the repository root, then the same reproduce.py command), then the best
# weights of the runs this call finished, seed 2's before seed 1's, as many to a file as fit (what
# latency.py times).
{ find benchmarks/results/runs benchmarks/results/ranks benchmarks/work/logs -newer "$marker" -type f 2>/dev/null
  ls "$out"/*.log; } > "$out/new_files.txt"
tar czf "$out/runs.tgz" -T "$out/new_files.txt" && rm -f "$out"/*.log
echo "packed in runs.tgz: $(wc -l < "$out/new_files.txt") files"
rm -f "$out/new_files.txt"
[[ $mode == main ]] || exit 0
slots=7 room=60000000
pack() {  # pack NAME PATH...: one more file to come back, if one is left and it fits
    if (( slots == 0 )); then echo "not packed (no file left): ${*:2}"; return 1; fi
    tar czf "$out/$1.tgz" "${@:2}" 2>/dev/null
    local size; size=$(stat -c %s "$out/$1.tgz")
    if (( size > 16000000 || size > room )); then rm -f "$out/$1.tgz"; echo "not packed (too large): ${*:2}"; return 1; fi
    slots=$((slots - 1)) room=$((room - size)); echo "packed $1.tgz: ${*:2}"
}
for d in benchmarks/work/runs/*/*/; do
    ck=$(ls -d "${d}"checkpoints/epoch_* 2>/dev/null | tail -n 1)
    [[ -n $ck && $ck -nt $marker ]] && pack "ckpt_$(basename "$d")" "$ck"  # it holds the best weights too
done
group=() bytes=0 n=0
for d in benchmarks/work/runs/*/*__seed2/ benchmarks/work/runs/*/*__seed1/; do
    f=${d}best.pt
    [[ -f $f && $f -nt $marker && ! -d ${d}checkpoints ]] || continue
    size=$(stat -c %s "$f")
    if (( ${#group[@]} > 0 && bytes + size > 15000000 )); then
        pack "best_$n" "${group[@]}" || break
        group=() bytes=0 n=$((n + 1))
    fi
    group+=("$f") bytes=$((bytes + size))
done
(( ${#group[@]} == 0 )) || pack "best_$n" "${group[@]}"
exit 0
