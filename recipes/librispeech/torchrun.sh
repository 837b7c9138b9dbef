#!/usr/bin/env bash
# Multi-node DDP without SLURM: run this on every node, NODE_RANK=0..NNODES-1, MASTER_ADDR = node 0.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 GPUS=4 recipes/librispeech/torchrun.sh /data/librispeech runs/ls-ctc
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 GPUS=4 recipes/librispeech/torchrun.sh /data/librispeech runs/ls-ctc
#
# torchrun starts GPUS processes per node and sets RANK/LOCAL_RANK/WORLD_SIZE; Lightning sees
# them (TorchElasticEnvironment) and creates no processes itself. The run directory must be on
# a filesystem every node sees (rank 0 writes checkpoints and results, once).
# Equivalent without torchrun (what tests/test_ddp.py does with 2 nodes x 1 CPU process):
#   MASTER_ADDR=... MASTER_PORT=29500 NODE_RANK=$NODE_RANK WORLD_SIZE=$((NNODES * GPUS)) \
#     asr-zoo train ... trainer.num_nodes=$NNODES trainer.devices=$GPUS trainer.strategy=ddp
set -euo pipefail
ROOT=${1:?usage: torchrun.sh LIBRISPEECH_ROOT RUN_DIR [overrides...]}
RUN=${2:?run dir}
shift 2
NNODES=${NNODES:?} NODE_RANK=${NODE_RANK:?} MASTER_ADDR=${MASTER_ADDR:?} GPUS=${GPUS:-1}
torchrun --nnodes="$NNODES" --node-rank="$NODE_RANK" --nproc-per-node="$GPUS" \
    --master-addr="$MASTER_ADDR" --master-port="${MASTER_PORT:-29500}" -m asr_zoo \
    train data=librispeech data.root="$ROOT" objective=ctc trainer=ddp \
    trainer.devices="$GPUS" trainer.num_nodes="$NNODES" run_dir="$RUN" "$@"
