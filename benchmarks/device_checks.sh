#!/usr/bin/env bash
# Every check that needs a GPU, as one prepared command that fits one 10-minute call of a lent
# device machine (an H100 or H200 with PyTorch but not this project's other requirements, and no
# network). In order, each under its own time limit so the whole stays inside the call:
#
#   1. fashion-mnist  the papers' CNN on the full real Fashion-MNIST at 0/20/40/60/80 % corruption,
#                     five processes sharing the GPU, training capped at FM_TRAIN_S seconds, then
#                     MASC/VeLPIC on every layer at epoch 0, the test peak and the last epoch
#                     (benchmarks/fashion_mnist_full.py)
#   2. calibrate      the cost model's cuda entry: training, forward, I/O, start-up and probe
#                     constants measured there (benchmarks/calibrate_costs.py --device cuda)
#   3. extract        one ResNet-18 checkpoint at real size: 60,000 images forward to L0, L1
#                     (16,384 dims) and avg_pool, probed on the GPU (benchmarks/bench_extract_probe.py)
#   4. probes         MASC/VeLPIC at the papers' largest shapes, numpy-free GPU routes, and the
#                     authors' per-class d x d approach on the host CPU (benchmarks/bench_probes_device.py)
#   5. spectral       MASC + VeLPIC settings one by one vs one shared eigendecomposition per class
#                     at 10 x 5,000 x 16,384 on the GPU (benchmarks/bench_spectral.py)
#
# Here (where pip and the data are), once:
#     bash benchmarks/device_checks.sh --prepare
#   fetches the wheels the device's Python lacks (jsonschema and what it needs) into .whl/ and
#   copies the four Fashion-MNIST IDX files into data/fashion-mnist/ (both git-ignored).
# On the device (the lease's `run`, carry [".whl", "data/fashion-mnist"], timeout_s 590):
#     bash benchmarks/device_checks.sh            # or name steps: ... fashion-mnist calibrate
# Here, to check the plumbing on the CPU at toy sizes (about a minute):
#     bash benchmarks/device_checks.sh --smoke
#
# What comes back ($OUT, or results/device_checks here): summary.txt (every step's printed
# figures and exit status), cost_calibration.json (the calibration file with the new cuda entry:
# copy it over src/pipeline/cost_calibration.json) and device_checks.tar.gz (all logs and JSON).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=device
steps=()
for arg in "$@"; do
    case "$arg" in
        --prepare) mode=prepare ;;
        --smoke) mode=smoke ;;
        fashion-mnist|calibrate|extract|probes|spectral) steps+=("$arg") ;;
        *) echo "device_checks.sh: unknown argument '$arg' (steps: fashion-mnist calibrate extract probes spectral;" \
                "flags: --prepare, --smoke)" >&2; exit 2 ;;
    esac
done
[ ${#steps[@]} -eq 0 ] && steps=(fashion-mnist calibrate extract probes spectral)

if [ "$mode" = prepare ]; then
    set -e
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl data/fashion-mnist
    # the versions this checkout's venv resolved; the device's Python is 3.12 on x86-64
    py=$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
    pins=$("$py" -m pip list --format=freeze 2>/dev/null \
           | grep -iE '^(jsonschema|jsonschema-specifications|referencing|rpds-py)==' || true)
    [ -n "$pins" ] || pins="jsonschema jsonschema-specifications referencing rpds-py"
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $pins
    cp /usr/share/datasets/fashion-mnist/*-ubyte.gz data/fashion-mnist/
    ls -l .whl data/fashion-mnist
    echo "prepared: carry .whl and data/fashion-mnist"
    exit 0
fi

out=${OUT:-results/device_checks}
work=$(mktemp -d /tmp/device_checks.XXXXXX)
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python

# The device's Python holds torch, numpy, pandas, h5py, ...; config validation needs jsonschema.
if ! "$py" -c "import jsonschema" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || { echo "wheel install failed" | tee -a "$summary"; exit 1; }
        export PYTHONPATH=/tmp/site
    else
        echo "jsonschema is missing and .whl/ holds no wheels: run --prepare here and carry .whl" | tee -a "$summary"
        exit 1
    fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

root=data/fashion-mnist
[ -f "$root/train-images-idx3-ubyte.gz" ] || root=/usr/share/datasets/fashion-mnist
if [ "$mode" = smoke ]; then
    FM_TRAIN_S=${FM_TRAIN_S:-20}
    fm_args=(--train-subset 300 --epochs 2 --corruptions 0 0.8)
    cal_args=(--device cpu --scale 0.1)
    ext_args=(--n 100 --m 50 --device cpu --layers L0 avg_pool --batch-size 50)
    probe_args=(--scale 0.02 --shapes cifar10 --routes numpy,torch-cpu --authors-dim 128 --peak-size 256)
    spectral_args=()
    declare -A limit=([fashion-mnist]=120 [calibrate]=120 [extract]=120 [probes]=120 [spectral]=120)
else
    FM_TRAIN_S=${FM_TRAIN_S:-150}
    fm_args=(--epochs 100 --corruptions 0 0.2 0.4 0.6 0.8)
    cal_args=(--device cuda --scale 4)
    ext_args=(--n 50000 --m 10000 --device cuda --layers L0 L1 avg_pool)
    probe_args=(--full --routes cuda,cuda-resident --authors-dim 4096)
    spectral_args=(--device cuda --full)
    # seconds; with the wheel install and the tar, about 560 s in all
    declare -A limit=([fashion-mnist]=$((FM_TRAIN_S + 100)) [calibrate]=75 [extract]=60 [probes]=110
                      [spectral]=50)
fi

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, keep its output, record the status
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$summary"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$work/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$work/$name.log" >> "$summary"
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$summary"
}

{
    echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')  mode: $mode"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$py" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"
    echo "cpus: $(nproc)"
} | tee -a "$summary"

cp src/pipeline/cost_calibration.json "$work/cost_calibration.json"
for s in "${steps[@]}"; do
    case "$s" in
        fashion-mnist) step fashion-mnist "${limit[$s]}" "$py" benchmarks/fashion_mnist_full.py --root "$root" \
                           --lr 1e-3 --batch-size 128 --time-budget-s "$FM_TRAIN_S" --out "$work/fashion_mnist" \
                           "${fm_args[@]}" ;;
        calibrate) step calibrate "${limit[$s]}" "$py" benchmarks/calibrate_costs.py "${cal_args[@]}" \
                       --out "$work/cost_calibration.json" ;;
        extract) step extract "${limit[$s]}" "$py" benchmarks/bench_extract_probe.py "${ext_args[@]}" \
                     --json "$work/extract.json" ;;
        probes) step probes "${limit[$s]}" "$py" benchmarks/bench_probes_device.py "${probe_args[@]}" \
                    --json "$work/probes.json" ;;
        spectral) step spectral "${limit[$s]}" "$py" benchmarks/bench_spectral.py "${spectral_args[@]}" ;;
    esac
done

cp "$work/cost_calibration.json" "$out/cost_calibration.json"
# logs, JSON, training logs and probe tables; not checkpoints or fitted probes (too big to come back)
tar -czf "$out/device_checks.tar.gz" --exclude="*.pt" --exclude="*.h5" -C "$work" .
echo "device_checks: done; $out holds summary.txt, cost_calibration.json, device_checks.tar.gz" | tee -a "$summary"
