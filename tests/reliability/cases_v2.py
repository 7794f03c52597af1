"""The 91 cases of the second hostile-input round (``reliability-v2.md``), as typed: (id, shell
command run in the scratch folder, predicate over (rc, output, scratch)). Worst class first: lost
files, crashes, silent wrong results, then tracebacks and messages."""

import json


def _err(*texts):
    return lambda rc, out, _: rc == 2 and all(t in out for t in texts) and "Traceback" not in out


def _err_absent(path, *texts):
    """A one-line error, and ``path`` (the output) was not written."""
    return lambda rc, out, d: _err(*texts)(rc, out, d) and not (d / path).exists()


def _ok(rc, out, _):
    return rc == 0 and "Traceback" not in out


Q = "cherry-mlx quantize fxruns/tiny/best --eval-batches 0"
CAB = "cherry-mlx cabstractor train --model fxruns/tiny/best --steps 2 --batch-size 2"
CABQ = "--num-queries 4 --num-layers 1 --num-heads 2"


CASES = [
    (
        "I24",
        "mkdir -p src1 && cp fx/smol.gguf src1/m.gguf && echo n > src1/notes.txt && "
        "cherry-mlx import src1/m.gguf -o src1 --force; ls src1",
        lambda rc, out, d: "m.gguf" in out and "notes.txt" in out and "contains the source" in out,
    ),
    (
        "I25",
        "mkdir -p proj/sub && echo t > proj/thesis.txt && echo d > proj/sub/data.csv && "
        "cherry-mlx import fx/smol.gguf -o proj --force",
        lambda rc, out, d: (
            rc == 0 and (d / "proj/thesis.txt").is_file() and (d / "proj/sub/data.csv").is_file()
        ),
    ),
    (
        "I26",
        "rm -rf fxruns/tinycopy; cp -r fxruns/tiny fxruns/tinycopy && "
        "cherry-mlx import fx/smol.gguf -o fxruns/tinycopy --force",
        lambda rc, out, d: rc == 2 and (d / "fxruns/tinycopy/checkpoints").is_dir(),
    ),
    (
        "I27",
        "mkdir -p dotbox && cd dotbox && cherry-mlx import ../fx/smol.gguf -o . --force",
        lambda rc, out, d: rc == 0 and (d / "dotbox/config.json").is_file(),
    ),
    (
        "I28",
        "mkdir -p cwdbox && echo k > cwdbox/keep.txt && cd cwdbox && "
        'cherry-mlx import ../fx/smol.gguf -o "$PWD" --force',
        lambda rc, out, d: rc == 0 and (d / "cwdbox/keep.txt").is_file(),
    ),
    (
        "I31",
        "mkdir -p out/.i30.tmp-abc123 && cherry-mlx import fx/smol.gguf -o out/i30 --force; "
        "ls -a out",
        lambda rc, out, d: "reclaimed" in out and ".i30.tmp" not in out.split("reclaimed")[-1],
    ),
    (
        "N06",
        "cherry-mlx info fx/smol.gguf | tail -4",
        lambda rc, out, d: rc == 0 and "effective depth 30" in out,
    ),
    (
        "N13",
        "mkdir -p mgg/model-hf && cp fx/smol.gguf mgg/model.gguf && "
        'echo \'{"file": "/x.gguf"}\' > mgg/model-hf/gguf_source.json && '
        "echo n > mgg/model-hf/notes.txt && cherry-mlx info mgg/model.gguf | tail -2",
        lambda rc, out, d: (
            rc == 0
            and (d / "mgg/model-hf/notes.txt").is_file()
            and not (d / "mgg/model-hf/model.safetensors").exists()
        ),
    ),
    (
        "W6",
        "mkdir -p wdir && CHERRY_MLX_WEIGHTS=./wdir cherry-mlx data build --scale 0.01 "
        "--no-prose --force 2>&1 | tail -1",
        lambda rc, out, d: (d / "wdir/data/default/train.jsonl").is_file(),
    ),
    (
        "W1",
        "CHERRY_MLX_WEIGHTS=/nowhere cherry-mlx train --preset cherry-tiny --steps 2 --batch-size 2"
        " --seq-len 64 --eval-every 0 --no-demo --runs-dir wruns --name w1",
        _err("CHERRY_MLX_WEIGHTS=/nowhere"),
    ),
    ("W2", "CHERRY_MLX_WEIGHTS=/nowhere cherry-mlx info", _err("CHERRY_MLX_WEIGHTS=/nowhere")),
    (
        "W4",
        "CHERRY_MLX_WEIGHTS=/nowhere cherry-mlx tag data/good/valid.jsonl -o tag/w4.jsonl "
        "--no-plot",
        _err_absent("tag/w4.jsonl", "CHERRY_MLX_WEIGHTS=/nowhere"),
    ),
    (
        "W10",
        "CHERRY_MLX_WEIGHTS=/nowhere cherry-mlx repro --only quant -o rp/w10",
        _err_absent("rp/w10/repro.json", "CHERRY_MLX_WEIGHTS=/nowhere"),
    ),
    (
        "W5",
        "CHERRY_MLX_WEIGHTS= cherry-mlx info cherry-tiny | tail -1",
        lambda rc, out, d: rc == 0 and "weight memory" in out,
    ),
    ("B04", "cherry-mlx data build -o db/b04 --scale nan --no-prose", _err("--scale nan")),
    (
        "B06",
        "mkdir -p cfg && echo garbage > cfg/garbage.json && cherry-mlx data build -o db/b06 "
        "--scale 0.01 --no-prose --tokenizer cfg/garbage.json",
        lambda rc, out, d: rc == 2 and not (d / "db/b06").exists(),
    ),
    (
        "TK13b",
        "mkdir -p data/good && head -300 $WEIGHTS/data/default/train.jsonl > "
        "data/good/train.jsonl && cherry-mlx tokenizer train -d data/good/train.jsonl --vocab-size "
        "1200 --no-required-hangul --model-max-length -5 -o tok/k13",
        _err("--model-max-length -5"),
    ),
    (
        "G04",
        "timeout 60 cherry-mlx generate fxruns/tiny/best -m 5 "
        '-p "$(python3 -c \'print("abc "*25000)\')"',
        lambda rc, out, d: rc == 0 and "only its last" in out,
    ),
    (
        "H10",
        "printf 'hi\\n' | timeout 60 cherry-mlx chat fxruns/tiny/best -m 3 --system "
        '"$(python3 -c \'print("x "*10000)\')"',
        _err("--system is"),
    ),
    ("G15", "cherry-mlx generate fxruns/tiny/best -p - -m 5 <&-", _err("stdin is closed")),
    (
        "G15b",
        "cherry-mlx generate fxruns/tiny/best -p hi -m 5 <&-",
        lambda rc, out, d: rc == 0 and "Traceback" not in out,
    ),
    (
        "H02",
        "cherry-mlx chat fxruns/tiny/best -m 5 <&-",
        lambda rc, out, d: rc == 0 and "Traceback" not in out,
    ),
    # -- loss ---------------------------------------------------------------------------------
    (
        "R23",
        "cherry-mlx repro --only quant --set pretrain_steps=2,eval_batches=1 -o userdir2",
        lambda rc, out, d: (
            rc == 2
            and (d / "userdir2/report.md").read_text() == "# my report\n"
            and (d / "userdir2/results.json").read_text() == '{"mine": 1}\n'
        ),
    ),
    (
        "T31",
        "cherry-mlx train --resume truns/res --runs-dir truns --seq-len 32 --batch-size 4 "
        "--steps 8 --no-demo",
        lambda rc, out, d: (
            rc == 2
            and [
                json.loads((d / "truns/res/train_config.json").read_text())[k]
                for k in ("seq_len", "batch_size", "steps")
            ]
            == [64, 2, 6]
        ),  # fmt: skip
    ),
    ("T34", "cherry-mlx train --resume truns/res --runs-dir truns --no-demo", _ok),
    # -- crash --------------------------------------------------------------------------------
    (
        "V1",
        "CHERRY_MLX_FAST_BLAS=$PWD/fakeblas.so cherry-mlx generate fxruns/tiny/best -p hi -m 3",
        _ok,
    ),
    (
        "V2",
        "CHERRY_MLX_FAST_BLAS=/nonexistent/libblas.so cherry-mlx generate fxruns/tiny/best "
        "-p hi -m 3",
        _ok,
    ),
    ("V5", "CHERRY_MLX_FAST_BLAS=/var/ cherry-mlx generate fxruns/tiny/best -p hi -m 3", _ok),
    (
        "V6",
        "CHERRY_MLX_FAST_BLAS=/nonexistent/x.so cherry-mlx train --preset cherry-tiny --steps 2 "
        "--batch-size 2 --seq-len 64 --eval-every 0 --no-demo --runs-dir vruns --name v6",
        lambda rc, out, d: _ok(rc, out, d) and not (d / "vruns/v6/train.pid").exists(),
    ),
    # -- silent -------------------------------------------------------------------------------
    (
        "I11",
        "cherry-mlx import fx/ver99.gguf -o out/i11",
        _err_absent("out/i11", "GGUF version 99"),
    ),
    (
        "I33_2.6",
        "cherry-mlx import fx/smol.gguf -o out/i33 & p=$!; sleep 2.6; kill -9 $p; wait $p; "
        "cherry-mlx import fx/smol.gguf -o out/i33 --force; ls -a out",
        lambda rc, out, d: rc == 0 and not list((d / "out").glob(".i33.tmp-*")),
    ),
    (
        "I33_3.0",
        "cherry-mlx import fx/smol.gguf -o out/i33 --force & p=$!; sleep 3.0; kill -9 $p; "
        "wait $p; cherry-mlx import fx/smol.gguf -o out/i33 --force; ls -a out",
        lambda rc, out, d: rc == 0 and not list((d / "out").glob(".i33.tmp-*")),
    ),
    (
        "I36",
        "cherry-mlx import fx/missing_q.gguf -o out/i36",
        _err_absent("out/i36", "missing", "q_proj"),
    ),
    (
        "I38",
        "cherry-mlx import fx/zero_layers.gguf -o out/i38",
        _err_absent("out/i38", "num_hidden_layers is 0"),
    ),
    ("I39", "cherry-mlx import fx/wrongshape.gguf -o out/i39", _err_absent("out/i39", "shape")),
    ("I40", "cherry-mlx import fx/nan.gguf -o out/i40", _err_absent("out/i40", "NaN")),
    (
        "I41",
        "cherry-mlx import fx/layers2_tensors1.gguf -o out/i41",
        _err_absent("out/i41", "block_count"),
    ),
    ("P10", "cherry-mlx plan cfg/indivisible.json --to 2L", _err("not divisible")),
    ("P14", "cherry-mlx plan cfg/moe_topk_gt.json --to 4L", _err("more than the 8 experts")),
    ("P20", "cherry-mlx plan cfg/moe_neg_experts.json --to 2L", _err("num_local_experts is -8")),
    ("P30", "cherry-mlx plan cherry-tiny --loops 4", _err("give --to")),
    ("P35", "cherry-mlx plan cherry-tiny --to 4L --context -5", _err("--context")),
    (
        "R04",
        'cherry-mlx repro --only ",,," --set steps=1 -o rp/x04',
        _err_absent("rp/x04", "names no stage"),
    ),
    (
        "R25",
        "cherry-mlx repro ./nonexistent-model --only sgt -o rp/r25",
        _err_absent("rp/r25", "nonexistent-model"),
    ),
    (
        "R26",
        "cherry-mlx repro --only sgt --data /nonexistent -o rp/r26",
        _err_absent("rp/r26", "/nonexistent"),
    ),
    ("Q03", f"{Q} -o q/q03 --keep :affine8", _err_absent("q/q03", "names no layer")),
    (
        "Q11",
        f"{Q} -o q/q11 --keep embed:affine8,embed:mxfp4",
        _err_absent("q/q11", "two treatments"),
    ),
    (
        "Q15",
        "cherry-mlx quantize fxruns/tiny/best -o q/q15 --eval-batches -5",
        _err_absent("q/q15", "--eval-batches"),
    ),
    ("C06", f"{CAB} feats/nanfeat {CABQ} -o cab/c06", _err_absent("cab/c06", "ex0.npy", "NaN")),
    ("C12", f"{CAB} feats/zerolen {CABQ} -o cab/c12", _err_absent("cab/c12", "ex0.npy", "(0, 16)")),
    (
        "C23",
        f"{CAB} feats/good --num-layers 1 --learning-rate nan -o cab/c23",
        _err_absent("cab/c23", "--learning-rate"),
    ),
    (
        "E08",
        "cherry-mlx eval fxruns/tiny --baseline fx/smol-hf --max-batches 1 --batch-size 2 "
        "--seq-len 64",
        _err("different tokenizers", "--baseline"),
    ),
    (
        "E02",
        "cherry-mlx eval fxruns/tiny --coupling --coupling-batches 1 --eta nan --max-batches 1 "
        "--batch-size 2 --seq-len 64 --plot ./e.png",
        _err_absent("e.png", "--eta"),
    ),
    (
        "A06",
        "cherry-mlx tag data/good/valid.jsonl -o tag/a06.jsonl --refine fxruns/tiny/best "
        "--tau nan --max-examples 2 --no-plot",
        _err_absent("tag/a06.jsonl", "--tau"),
    ),
    (
        "A07",
        "cherry-mlx tag data/good/valid.jsonl -o tag/a07.jsonl --refine fxruns/tiny/best "
        "--layer 99 --max-examples 2 --no-plot",
        _err_absent("tag/a07.jsonl", "--layer 99"),
    ),
    (
        "N07",
        "cherry-mlx info fused/f01 | tail -3",
        lambda rc, out, d: rc == 0 and "effective depth 3 (6 unique layers in 2 experts" in out,
    ),
    (
        "V4",
        "CHERRY_MLX_FAST_BLAS=libmyblas.so cherry-mlx generate fxruns/tiny/best -p hi -m 3",
        lambda rc, out, d: _ok(rc, out, d) and "could not load CHERRY_MLX_FAST_BLAS" in out,
    ),
    # -- traceback / message ------------------------------------------------------------------
    ("I12", "cherry-mlx import fx/ntensors.gguf -o out/i12", _err_absent("out/i12", "ntensors")),
    ("I13", "cherry-mlx import fx/nkv.gguf -o out/i13", _err_absent("out/i13", "nkv.gguf")),
    (
        "I35g",
        'cherry-mlx generate fx/tiny_llama.gguf -p "" -m 3 --raw',
        _err("encodes to 0 tokens"),
    ),
    ("P03", "cherry-mlx plan cfg/list.json --to 2L", _err("cfg/list.json", "array")),
    ("P05", "cherry-mlx plan cfg/null.json --to 2L", _err("cfg/null.json", "null")),
    ("P06", "cherry-mlx plan cfg/binary.json --to 2L", _err("cfg/binary.json")),
    ("P07", "cherry-mlx plan cfg/strhidden.json --to 2L", _err("hidden_size is 'big'")),
    ("P08", "cherry-mlx plan cfg/neglayers.json --to 2L", _err("num_hidden_layers is -4")),
    ("P09", "cherry-mlx plan cfg/zeroheads.json --to 2L", _err("num_attention_heads is 0")),
    ("P11", "cherry-mlx plan cfg/inf.json --to 2L", _err("hidden_size is inf")),
    ("P12", "cherry-mlx plan cfg/moe_noffn.json --to 4L", _err("moe_intermediate_size")),
    ("P15", "cherry-mlx plan cfg/moe_mlponly_int.json --to 4L", _err("mlp_only_layers is 3")),
    ("P17", "cherry-mlx plan cfg/mla_missing.json --to 2L", _err("qk_nope_head_dim")),
    ("P18", "cherry-mlx plan cfg/moe_experts_str.json --to 2L", _err("num_local_experts")),
    ("P33", "cherry-mlx plan cherry-tiny --layout 1,,x", _err("--layout")),
    (
        "R21",
        "cherry-mlx repro --only quant --set pretrain_steps=2,eval_batches=1 -o userdir",
        lambda rc, out, d: (
            _err("userdir")(rc, out, d)
            and (d / "userdir/results/sgt.json").read_text() == '{"mine": 1}\n'
            and not (d / "userdir/report.md").exists()
        ),
    ),
    (
        "R29",
        "cherry-mlx repro ./nonexistent-model --only sgt -o rp/r25; timeout 20 cherry-mlx repro "
        "--only quant --set pretrain_steps=2,eval_batches=1 -o rp/r25",
        lambda rc, out, d: "[repro]" in out and "rerun with those settings" not in out,
    ),
    ("Q13", f"{Q} -o q/q13 --calibrate gptq --calib-samples 0", _err_absent("q/q13", "--calib")),
    ("Q14", f"{Q} -o q/q14 --calibrate awq --calib-samples -1", _err_absent("q/q14", "--calib")),
    ("C07", f"{CAB} feats/feat3d {CABQ} -o cab/c07", _err_absent("cab/c07", "ex0.npy", "shape")),
    ("C11", f"{CAB} feats/garbnpy {CABQ} -o cab/c11", _err_absent("cab/c11", "ex0.npy")),
    (
        "C16",
        f"{CAB} feats/good --num-layers 1 --num-queries 0 -o cab/c16",
        _err_absent("cab/c16", "--num-queries"),
    ),
    (
        "C18",
        f"{CAB} feats/good --num-layers 1 --valid-fraction 1.5 -o cab/c18",
        _err_absent("cab/c18", "--valid-fraction"),
    ),
    (
        "C19",
        "cherry-mlx cabstractor train feats/good --model fxruns/tiny/best --steps 2 "
        "--batch-size 0 -o cab/c19",
        _err_absent("cab/c19", "--batch-size"),
    ),
    (
        "C20",
        f"{CAB} feats/good --num-layers 1 --dims -1 -o cab/c20",
        _err_absent("cab/c20", "--dims"),
    ),
    (
        "F2",
        "cherry-mlx train --model fx/tiny64 --batch-size 2 --seq-len 64 --eval-every 0 --no-demo "
        "--runs-dir fxruns --steps 2 --name tiny64",
        _err("--preset", "fx/tiny64"),
    ),
    (
        "FU18",
        "cherry-mlx fuse fxruns/tiny/best fxruns/tiny/best --steps 1 --batch-size 2 --seq-len 64 "
        "--runs-dir fruns --name f01 -o fused/f18",
        lambda rc, out, d: _err("choose another --name")(rc, out, d) and "pass --resume" not in out,
    ),
    (
        "D03",
        "cherry-mlx distill --teacher fx/smol-hf --student fxruns/tiny/best --steps 1 "
        "--batch-size 2 --seq-len 64 --eval-every 0 --runs-dir druns --name d03",
        lambda rc, out, d: _err("--teacher and --student")(rc, out, d) and "expert" not in out,
    ),
    ("R03r", "cherry-mlx ssgt-retention cfg/garbage.json sg/v01.json", _err("cfg/garbage.json")),
    (
        "TK10",
        "cherry-mlx tokenizer train -d fx/tiny_llama.gguf --vocab-size 600 -o tok/k10 "
        "--no-required-hangul",
        _err_absent("tok/k10", "tiny_llama.gguf", "UTF-8"),
    ),
    ("N11", "cherry-mlx generate trunc_st -p hi -m 3", _err("trunc_st", "damaged")),
    ("N12", "cherry-mlx generate garb_st -p hi -m 3", _err("garb_st", "damaged")),
    (
        "V3",
        "CHERRY_MLX_FAST_BLAS=/lib/x86_64-linux-gnu/libm.so.6 cherry-mlx generate "
        "fxruns/tiny/best -p hi -m 3",
        _ok,
    ),
    (
        "T33",
        "cherry-mlx train --resume truns/res --runs-dir truns --preset cherry-48l --no-demo",
        _err("conflicts"),
    ),
]
