#!/usr/bin/env python
"""Reference CPU benchmark of the ORIGINAL OpenTSLM (StanfordBDHG/OpenTSLM).

Runs the original OpenTSLMSP (and OpenTSLMFlamingo) classes, unmodified, on
stage-2-shaped (M4 captioning) inputs and measures, in one process:

  * training step time (zero_grad + compute_loss + backward + clip_grad_norm_ +
    AdamW step + LR-scheduler step, exactly the loop body of
    CurriculumTrainer._train_stage) -> median over --steps after --warmup steps,
    samples/s;
  * peak RSS during training (kernel VmHWM, reset via /proc/self/clear_refs
    before each training phase; cross-checked by a psutil sampling thread);
  * generation tokens/s (greedy, batch 1, exactly --gen-tokens new tokens) of
    the wrapper's own generate(), and of the bare LLM's generate() on a text
    prompt of the same token length (the ratio is the wrapper overhead).

No original file is edited.  The only run-time shims:
  * the LLM id is passed through the constructors' own `llm_id` argument and
    device="cpu";
  * OpenTSLMSP hard-codes torch_dtype=bfloat16 for the LLM: with --dtype
    float32 (default) the loaded LLM is cast with `model.llm.float()` after
    construction (the weights on disk are bf16, so nothing is lost);
  * `open_clip` is replaced by an empty module in sys.modules when it cannot be
    imported: open_flamingo/__init__ imports it for create_model_and_transforms,
    which OpenTSLM never calls (open_clip needs torchvision, whose PyPI wheel
    is a CUDA build that does not load next to the CPU torch wheel);
  * data go through the original M4QADataset formatting code (a subclass only
    replaces _load_splits with synthetic rows, since M4 downloads data) and the
    original collate function extend_time_series_to_match_patch_size_and_aggregate;
  * the optimizer is built by the original CurriculumTrainer._get_optimizer on a
    bare (``__new__``) CurriculumTrainer instance with the stage-2 learning rates.
"""

import argparse
import copy
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument(
    "--repo",
    default=os.environ.get(
        "OPENTSLM_REPO",
        os.path.join(os.environ.get("REF_DIR", os.path.join(tempfile.gettempdir(), "ref")), "opentslm"),
    ),
    help="work tree of StanfordBDHG/OpenTSLM (contains src/opentslm and curriculum_learning.py)",
)
ap.add_argument(
    "--llm",
    default=os.environ.get(
        "OPENTSLM_LLM",
        os.path.join(os.environ.get("REF_DIR", os.path.join(tempfile.gettempdir(), "ref")), "smollm2-135m"),
    ),
    help="local HF folder of the LLM (SmolLM2-135M-Instruct converted from GGUF)",
)
ap.add_argument(
    "--out",
    default=os.path.join(os.environ.get("REF_DIR", os.path.join(tempfile.gettempdir(), "ref")), "ref_results.json"),
)
ap.add_argument("--inputs-out", default=None, help="where to dump the exact benchmark inputs (default: next to --out)")
ap.add_argument("--models", default="sp,flamingo", help="comma list of sp,flamingo")
ap.add_argument(
    "--lengths",
    default="256,1024",
    help="time-series lengths, comma separated; an item like mix64-256-512-1024 is one batch whose rows "
    "have those lengths (the batch size is then the number of lengths)",
)
ap.add_argument("--batch-size", type=int, default=4)
ap.add_argument("--warmup", type=int, default=2)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--gen-tokens", type=int, default=64)
ap.add_argument(
    "--gen-reps", type=int, default=5, help="timed generate calls of each kind (after 1 warm-up), interleaved"
)
ap.add_argument("--caption-tokens", type=int, default=60)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument(
    "--dtype",
    default="float32",
    choices=["float32", "bfloat16"],
    help="LLM dtype for OpenTSLMSP (bfloat16 = the original's hard-coded default); "
    "Flamingo is always float32 (the original loads it without a dtype)",
)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)

REPO = os.path.abspath(args.repo)
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, REPO)

SHIMS = []
try:
    import open_clip  # noqa: F401  (only to test importability)
except Exception as e:  # see module docstring
    sys.modules["open_clip"] = types.ModuleType("open_clip")
    SHIMS.append(f"open_clip stubbed ({type(e).__name__}: {e})")

import curriculum_learning as CL  # noqa: E402  (original training script, imported for _get_optimizer)
import transformers  # noqa: E402
from opentslm.model.llm.OpenTSLMSP import OpenTSLMSP  # noqa: E402
from opentslm.model_config import GRAD_CLIP_NORM, PATCH_SIZE, WARMUP_FRAC  # noqa: E402
from opentslm.time_series_datasets.m4.M4QADataset import M4QADataset  # noqa: E402
from opentslm.time_series_datasets.util import extend_time_series_to_match_patch_size_and_aggregate  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

try:
    from opentslm.model.llm.OpenTSLMFlamingo import OpenTSLMFlamingo  # noqa: E402

    FLAMINGO_IMPORT_ERROR = None
except Exception as e:  # pragma: no cover
    OpenTSLMFlamingo = None
    FLAMINGO_IMPORT_ERROR = f"{type(e).__name__}: {e}"

# stage-2 (M4 captioning) learning rates, from CurriculumTrainer.stage2_captioning
STAGE2_LR = dict(lr_encoder=2e-4, lr_projector=1e-4, lr_base=2e-4)


# ----------------------------------------------------------------------------- helpers
def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def release_memory():
    """gc + glibc malloc_trim, so RSS baselines between phases are not inflated by freed-but-kept heap."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


def rss_mb():
    return psutil.Process().memory_info().rss / 2**20


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def vm_hwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    def __init__(self, period=0.005):
        self.period, self.peak, self._stop = period, 0.0, threading.Event()
        self._proc = psutil.Process()

    def __enter__(self):
        self.peak = self._proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def peak_mb(self):
        return self.peak / 2**20


def n_params(module, trainable=False):
    seen, n = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


CAPTION_TEMPLATE = (
    "The time series shows a clear upward trend with pronounced seasonal oscillations. "
    "Values start near {a:.1f} and rise steadily to around {b:.1f} by the end of the window, "
    "with a regular cycle of roughly {p} steps. Short-term noise is moderate and there are no "
    "abrupt level shifts, outliers or missing segments. Overall the series is smooth, trending "
    "and strongly periodic, which is typical for monthly demand or production data in the M4 collection."
)


def make_rows(length, n, tokenizer, caption_tokens, seed):
    """Deterministic synthetic M4-like rows: {'id', 'series', 'caption'}."""
    rng = np.random.default_rng(seed + length)
    rows = []
    t = np.arange(length, dtype=np.float64)
    for i in range(n):
        period = 12 + 4 * i
        series = (
            1000.0
            + 50.0 * i
            + (0.5 + 0.25 * i) * t
            + 40.0 * np.sin(2 * np.pi * t / period)
            + rng.normal(0.0, 8.0, length)
        )
        text = CAPTION_TEMPLATE.format(a=series[:period].mean(), b=series[-period:].mean(), p=period)
        ids = tokenizer(text, add_special_tokens=False).input_ids[:caption_tokens]
        caption = tokenizer.decode(ids)
        rows.append({"id": f"synth_L{length}_{i}", "series": series.astype(np.float32).tolist(), "caption": caption})
    return rows


def build_batch(rows, eos_token):
    """Original M4QADataset formatting + original collate function."""
    Synth = type("SynthM4QADataset", (M4QADataset,), {"_load_splits": lambda self: (rows, rows[:1], rows[:1])})
    ds = Synth("train", EOS_TOKEN=eos_token)
    batch = [copy.deepcopy(ds[i]) for i in range(len(rows))]
    return extend_time_series_to_match_patch_size_and_aggregate(batch, patch_size=PATCH_SIZE)


def bare_trainer(model, model_type):
    """A CurriculumTrainer without __init__ side effects, to call its _get_optimizer."""
    tr = CL.CurriculumTrainer.__new__(CL.CurriculumTrainer)
    tr.model_type, tr.model, tr.rank, tr.world_size = model_type, model, 1, 1  # rank!=0 -> no prints
    return tr


def train_bench(model, model_type, batch):
    tr = bare_trainer(model, model_type)
    optimizer = tr._get_optimizer(len(batch), **STAGE2_LR)
    total = args.warmup + args.steps
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(WARMUP_FRAC * total), num_training_steps=total
    )
    model.train()
    release_memory()
    rss_before = rss_mb()
    hwm_ok = reset_peak_rss()
    times, losses = [], []
    with RssSampler() as sampler:
        for i in range(total):
            t0 = time.perf_counter()
            # --- loop body of CurriculumTrainer._train_stage ---
            optimizer.zero_grad()
            loss = model.compute_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            optimizer.step()
            scheduler.step()
            lv = loss.item()
            # ---------------------------------------------------
            dt = time.perf_counter() - t0
            losses.append(lv)
            if i >= args.warmup:
                times.append(dt)
            print(
                f"    step {i:2d} {'(warm-up)' if i < args.warmup else '         '} {dt:7.3f} s  loss {lv:.4f}",
                flush=True,
            )
    peak_hwm = vm_hwm_mb() if hwm_ok else float("nan")
    n_opt = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    optimizer.zero_grad(set_to_none=True)
    del optimizer, scheduler
    med = statistics.median(times)
    return {
        "step_s_median": med,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "step_s_all": times,
        "samples_per_s": len(batch) / med,
        "losses": losses,
        "rss_before_train_mb": rss_before,
        "peak_rss_train_mb": peak_hwm,
        "peak_rss_train_sampled_mb": sampler.peak_mb,
        "peak_minus_before_mb": (peak_hwm if hwm_ok else sampler.peak_mb) - rss_before,
        "optimizer_params": n_opt,
    }


class GenShape:
    """Wrap an object's .generate to record the shape of what it returns (instrumentation only)."""

    def __init__(self, obj):
        self.obj, self.orig, self.shapes = obj, obj.generate, []

        def wrapped(*a, **k):
            out = self.orig(*a, **k)
            self.shapes.append(tuple(out.shape))
            return out

        obj.generate = wrapped

    def restore(self):
        self.obj.generate = self.orig


def bare_prompt_ids(tokenizer, prompt_len):
    filler = " ".join([CAPTION_TEMPLATE.format(a=1.0, b=2.0, p=12)] * 40)
    ids = tokenizer(filler, add_special_tokens=False).input_ids
    ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids
    ids = torch.tensor([ids[:prompt_len]])
    assert ids.shape[1] == prompt_len
    return ids


def make_wrapper_gen(model, sample):
    """Greedy, batch 1, exactly n new tokens, through the wrapper's own generate()
    (under torch.no_grad(), as CurriculumTrainer._evaluate_stage calls it)."""

    def run(n):
        with torch.no_grad():
            return model.generate([sample], max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)

    return run


def make_bare_gen(llm, tokenizer, prompt_len, shapes):
    ids = bare_prompt_ids(tokenizer, prompt_len)
    mask = torch.ones_like(ids)

    def run(n):
        with torch.no_grad():
            out = llm.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
            )
        shapes.append(tuple(out.shape))
        return out

    return run


def interleaved(fns, n, reps):
    """One warm-up call of each fn, then `reps` rounds calling them alternately (A B A B ...),
    so slow drifts of a shared host hit all of them alike. Returns {name: [seconds...]}."""
    for f in fns.values():
        f(n)
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f(n)
            ts[k].append(time.perf_counter() - t0)
    return ts


def summarize_gen(t_full_all, t_one_all, new_tokens, prompt_len):
    t_full, t_one = statistics.median(t_full_all), statistics.median(t_one_all)
    return {
        "prompt_tokens": prompt_len,
        "new_tokens": new_tokens,
        "t_total_s": t_full,
        "t_total_all_s": t_full_all,
        "t_first_token_s": t_one,
        "t_first_token_all_s": t_one_all,
        "tokens_per_s": new_tokens / t_full,
        "decode_tokens_per_s": (new_tokens - 1) / max(t_full - t_one, 1e-9),
    }


def gen_bench_bare_only(llm, tokenizer, prompt_len):
    shapes = []
    f = make_bare_gen(llm, tokenizer, prompt_len, shapes)
    full = interleaved({"b": f}, args.gen_tokens, args.gen_reps)["b"]
    new = shapes[-1][1] - prompt_len
    one = interleaved({"b": f}, 1, args.gen_reps)["b"]
    return summarize_gen(full, one, new, prompt_len)


def sp_prompt_len(model, sample):
    with torch.no_grad():
        emb, mask = model.pad_and_apply_batch([sample])
    return int(mask.shape[1])


def flamingo_prompt_len(model, sample):
    ids, _, mask, _ = model.pad_and_apply_batch([sample], include_labels=True)
    return int(ids.shape[1])


def sp_train_seq_stats(model, batch):
    with torch.no_grad():
        emb, mask = model.pad_and_apply_batch(batch)
        ans = model.tokenizer([b["answer"] for b in batch], return_tensors="pt", padding=True, truncation=True)
    return {
        "prompt_len_padded": int(mask.shape[1]),
        "answer_len_padded": int(ans.input_ids.shape[1]),
        "total_len": int(mask.shape[1] + ans.input_ids.shape[1]),
        "answer_tokens_each": ans.attention_mask.sum(1).tolist(),
    }


def flamingo_train_seq_stats(model, batch):
    ids, images, mask, labels = model.pad_and_apply_batch(batch, include_labels=False)
    return {
        "total_len": int(ids.shape[1]),
        "answer_tokens_each": (labels != -100).sum(1).tolist(),
        "vision_x_shape": list(images.shape),
    }


def load_bare(attn="eager", dtype=torch.float32):
    return AutoModelForCausalLM.from_pretrained(args.llm, dtype=dtype, attn_implementation=attn)


def run_config(mname, model_type, L, rows, tokenizer, errors):
    seed_all(args.seed)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    try:
        if mname == "sp":
            model = OpenTSLMSP(llm_id=args.llm, device="cpu")
            loaded_dtype = str(next(model.llm.parameters()).dtype)
            if args.dtype == "float32":
                model.llm.float()  # the original hard-codes torch_dtype=torch.bfloat16
        else:
            model = OpenTSLMFlamingo(
                device="cpu", llm_id=args.llm, cross_attn_every_n_layers=1, gradient_checkpointing=False
            )
            loaded_dtype = str(next(model.llm.lang_encoder.parameters()).dtype)
        model = model.to("cpu")  # as CurriculumTrainer._initialize_model does
    except Exception as e:
        import traceback

        traceback.print_exc()
        errors.append({"model": model_type, "ts_len": L, "stage": "construct", "error": f"{type(e).__name__}: {e}"})
        return None
    load_s = time.perf_counter() - t0
    eos = model.get_eos_token()
    res = {
        "model": model_type,
        "ts_len": L,
        "load_s": load_s,
        "llm_dtype_as_loaded": loaded_dtype,
        "llm_dtype_benchmarked": str(next(model.llm.parameters()).dtype),
        "params_total": n_params(model),
        "params_trainable": n_params(model, trainable=True),
        "rss_before_load_mb": rss0,
        "rss_after_load_mb": rss_mb(),
        "eos_token": eos,
    }
    print(
        f"\n== {model_type} L={L}: loaded in {load_s:.1f}s, params {res['params_total']:,} "
        f"(trainable {res['params_trainable']:,}), LLM dtype as loaded {loaded_dtype}, "
        f"RSS before load {rss0:.0f} MB",
        flush=True,
    )
    try:
        batch = build_batch(rows, eos)
        res["seq"] = (sp_train_seq_stats if mname == "sp" else flamingo_train_seq_stats)(model, batch)
        print(f"   seq {res['seq']}", flush=True)
        seed_all(args.seed)
        res["train"] = train_bench(model, model_type, batch)
        tr = res["train"]
        print(
            f"   train: median {tr['step_s_median']:.3f} s/step (min {tr['step_s_min']:.3f}), "
            f"{tr['samples_per_s']:.3f} samples/s, peak RSS {tr['peak_rss_train_mb']:.0f} MB "
            f"(before {tr['rss_before_train_mb']:.0f} MB)",
            flush=True,
        )
        del batch
        release_memory()

        # generation: the wrapper and the bare LLM (text prompt of the same length), interleaved.
        # The model is the one just trained for a few steps: that changes the text, not the cost,
        # since min_new_tokens forces exactly gen_tokens new tokens.
        model.eval()
        sample = build_batch(rows[:1], eos)[0]
        plen = (sp_prompt_len if mname == "sp" else flamingo_prompt_len)(model, sample)
        # the originals load their LLM with attn_implementation="eager"; same dtype as the wrapper's LLM
        bare = load_bare("eager", dtype=next(model.llm.parameters()).dtype)
        bare.eval()
        rec, bare_shapes = GenShape(model.llm), []
        fns = {"wrapper": make_wrapper_gen(model, sample), "bare": make_bare_gen(bare, tokenizer, plen, bare_shapes)}
        try:
            full = interleaved(fns, args.gen_tokens, args.gen_reps)
            out_shape, b_full_shape = rec.shapes[-1], bare_shapes[-1]
            one = interleaved(fns, 1, args.gen_reps)
            texts = fns["wrapper"](args.gen_tokens)
        finally:
            rec.restore()
        # SP generates from inputs_embeds only -> its output holds only the new ids;
        # Flamingo generates from input_ids -> output = prompt + new ids.
        new_w = out_shape[1] if mname == "sp" else out_shape[1] - plen
        g = summarize_gen(full["wrapper"], one["wrapper"], new_w, plen)
        g["gen_out_shape"], g["text"] = out_shape, texts[0]
        bb = summarize_gen(full["bare"], one["bare"], b_full_shape[1] - plen, plen)
        res["gen"], res["bare_llm_gen"] = g, bb
        res["gen_ratio_vs_bare"] = g["tokens_per_s"] / bb["tokens_per_s"]
        res["decode_ratio_vs_bare"] = g["decode_tokens_per_s"] / bb["decode_tokens_per_s"]
        print(
            f"   gen: wrapper {g['tokens_per_s']:.2f} tok/s ({g['new_tokens']} new, prompt {plen}, "
            f"first token {g['t_first_token_s']:.2f} s) | bare LLM {bb['tokens_per_s']:.2f} tok/s "
            f"({bb['new_tokens']} new, first {bb['t_first_token_s']:.2f} s) | ratio "
            f"{res['gen_ratio_vs_bare']:.3f}",
            flush=True,
        )
    except Exception as e:
        import traceback

        traceback.print_exc()
        res["error"] = f"{type(e).__name__}: {e}"
        errors.append({"model": model_type, "ts_len": L, "stage": "bench", "error": res["error"]})
    return res


# ----------------------------------------------------------------------------- main
def main():
    t_start = time.time()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    lengths = [x if x.startswith("mix") else int(x) for x in args.lengths.split(",")]
    commit = ""
    try:  # a `git archive` export has no .git: setup_ref_env.sh writes the commit to <repo>/.commit
        commit = open(os.path.join(REPO, ".commit")).read().strip()
    except OSError:
        try:
            commit = subprocess.run(
                ["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
        except Exception:
            pass
    meta = {
        "what": "original StanfordBDHG/OpenTSLM, CPU reference benchmark",
        "repo": REPO,
        "repo_commit": commit or os.environ.get("OPENTSLM_COMMIT", "unknown"),
        "llm": os.path.abspath(args.llm),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "steps": args.steps,
        "gen_tokens": args.gen_tokens,
        "gen_reps": args.gen_reps,
        "caption_tokens": args.caption_tokens,
        "seed": args.seed,
        "stage2_lr": STAGE2_LR,
        "grad_clip": GRAD_CLIP_NORM,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or "",
        "cpu_count": os.cpu_count(),
        "shims": SHIMS,
    }
    try:
        import peft

        meta["peft"] = peft.__version__
    except Exception:
        pass
    try:
        from importlib.metadata import version

        meta["open_flamingo"] = version("open-flamingo")
    except Exception:
        pass
    try:
        meta["cpu"] = [x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")][0]
    except Exception:
        pass
    print(json.dumps(meta, indent=1), flush=True)

    tokenizer = AutoTokenizer.from_pretrained(args.llm)

    def rows_for(L):
        if isinstance(L, str):  # mixed lengths: one row of each length, ids kept distinct
            return [
                dict(make_rows(int(n), 1, tokenizer, args.caption_tokens, args.seed + i)[0], id=f"synth_{L}_{i}")
                for i, n in enumerate(L[3:].split("-"))
            ]
        return make_rows(L, args.batch_size, tokenizer, args.caption_tokens, args.seed)

    rows_by_len = {L: rows_for(L) for L in lengths}
    inputs_dump = {str(L): rows for L, rows in rows_by_len.items()}

    results, errors = [], []

    for mname in models:
        model_type = {"sp": "OpenTSLMSP", "flamingo": "OpenTSLMFlamingo"}[mname]
        if mname == "flamingo" and OpenTSLMFlamingo is None:
            errors.append({"model": model_type, "stage": "import", "error": FLAMINGO_IMPORT_ERROR})
            print(f"!! {model_type} import failed: {FLAMINGO_IMPORT_ERROR}", flush=True)
            continue
        for L in lengths:
            # a fresh model per (model, length), same seed: every row is independent of the others;
            # run_config's locals (model, optimizer, bare LLM) die when it returns.
            release_memory()
            res = run_config(mname, model_type, L, rows_by_len[L], tokenizer, errors)
            if res is not None:
                results.append(res)
            release_memory()

    # bare LLM with sdpa attention, as an extra data point (not interleaved)
    sdpa = {}
    plens = sorted({r["gen"]["prompt_tokens"] for r in results if "gen" in r})
    try:
        if plens:
            m = load_bare("sdpa", dtype=torch.bfloat16 if args.dtype == "bfloat16" else torch.float32)
            m.eval()
            for pl in plens:
                sdpa[str(pl)] = gen_bench_bare_only(m, tokenizer, pl)
            del m
            release_memory()
    except Exception as e:
        errors.append({"model": "bare-llm-sdpa", "error": f"{type(e).__name__}: {e}"})

    # ------------------------------------------------------------------ table
    nan = float("nan")
    hdr = (
        f"{'model':<17}{'L':>5}{'dtype':>9}{'seq':>5}{'step s':>8}{'min s':>7}{'samp/s':>7}{'peakRSS':>8}"
        f"{'dRSS':>6}{'gen t/s':>8}{'bare t/s':>9}{'ratio':>6}{'dec.r':>6}{'prompt':>7}"
    )
    lines = [hdr, "-" * len(hdr)]
    for r in results:
        if "train" not in r:
            lines.append(f"{r['model']:<17}{r['ts_len']:>5}  ERROR {r.get('error', '')}")
            continue
        t, g, bb = r["train"], r.get("gen", {}), r.get("bare_llm_gen", {})
        lines.append(
            f"{r['model']:<17}{r['ts_len']:>5}{r['llm_dtype_benchmarked'].replace('torch.', ''):>9}"
            f"{r['seq']['total_len']:>5}{t['step_s_median']:>8.3f}{t['step_s_min']:>7.3f}{t['samples_per_s']:>7.3f}"
            f"{t['peak_rss_train_mb']:>8.0f}{t['peak_minus_before_mb']:>6.0f}{g.get('tokens_per_s', nan):>8.2f}"
            f"{bb.get('tokens_per_s', nan):>9.2f}{r.get('gen_ratio_vs_bare', nan):>6.3f}"
            f"{r.get('decode_ratio_vs_bare', nan):>6.3f}{g.get('prompt_tokens', 0):>7}"
        )
    lines.append(
        "seq = training sequence length (prompt positions incl. time-series patches + answer tokens, padded); "
        "step s = median (min) train step; peakRSS/dRSS = MB peak RSS during training / minus RSS before; "
        "gen t/s = wrapper generate, 64 new tokens greedy, batch 1; bare t/s = bare LLM generate on a text "
        "prompt of `prompt` tokens (interleaved runs); ratio = gen/bare total tok/s; dec.r = same for decode "
        "only (64-token time minus 1-token time)."
    )
    if sdpa:
        lines.append(
            "bare LLM, sdpa attention (extra): "
            + ", ".join(f"prompt {k}: {v['tokens_per_s']:.2f} tok/s" for k, v in sdpa.items())
        )
    table = "\n".join(lines)

    out = {
        "meta": meta,
        "results": results,
        "bare_llm_sdpa_gen": sdpa,
        "errors": errors,
        # ru_maxrss is reset together with VmHWM by clear_refs, so take the max over the phases too
        "peak_rss_process_mb": max(
            [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
            + [r["train"]["peak_rss_train_mb"] for r in results if "train" in r]
        ),
        "wall_s": time.time() - t_start,
        "table": table,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=str)
    inputs_out = args.inputs_out or os.path.join(os.path.dirname(os.path.abspath(args.out)), "ref_inputs.json")
    with open(inputs_out, "w") as f:
        json.dump(
            {
                "note": "exact M4-style rows fed to M4QADataset formatting (series raw, captions before EOS)",
                "rows_by_ts_len": inputs_dump,
            },
            f,
        )

    print("\n" + table)
    if errors:
        print("\nERRORS:")
        for e in errors:
            print("  ", e)
    print(
        f"\nwrote {args.out} and {inputs_out}; wall {out['wall_s']:.0f}s; process peak RSS "
        f"{out['peak_rss_process_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
