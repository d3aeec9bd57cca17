"""Peak memory and time of reading a large corpus: the streaming reader against the word-list reader.

    nice -n 10 python benchmarks/corpus_memory.py                       # 100M tokens, ~10 minutes
    python benchmarks/corpus_memory.py --tokens=2000000 --word_list_tokens=1000000   # a quick look

1. Generates, once (kept in --folder and reused while its parameters match), a corpus in the plain
   `{train,valid,test}.txt` layout: words drawn from a Zipf distribution (exponent --zipf_exponent
   over --types ranks, word i spelt with letters, the frequent words short), lines of 10 to 30 words
   (20 on average), --tokens words in train and 1/200 of that in valid and in test. A second corpus
   of --word_list_tokens words, drawn the same way, is the word-list reader's.
2. Each measurement runs in a fresh Python process (this script with --measure): after importing
   NumPy and the reader it takes its peak resident memory so far as the baseline (`VmHWM` of
   /proc/self/status, see `peak_rss_bytes`), reads the corpus, and reports the seconds and the
   peak resident memory above that baseline. The
   readers: `streaming` (`gradual_rnn.data.reader.load_corpus`) and `word_lists` (the package's first
   reader, `ptb.read_words` + `ptb.build_vocabulary` + `ptb.words_to_ids` on all three splits, as
   `load_corpus` did before the streaming reader).
3. The streaming reader is measured at --tokens and at --word_list_tokens, the word lists at
   --word_list_tokens; their fingerprints there must be equal. The word lists' peak is extrapolated
   linearly to --tokens (labelled as such) and, when that extrapolation is under
   --word_list_full_limit_gib, also measured at --tokens.

Prints one JSON line and a markdown table. The token counts are the reader's (each line's `<eos>`
included), so they exceed the words drawn by about 5 %.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("tokens", 100_000_000, "Words drawn for the train split of the large corpus.")
flags.DEFINE_integer("word_list_tokens", 10_000_000, "Words drawn for the train split the word-list "
                     "reader is measured on.")
flags.DEFINE_integer("types", 250_000, "Ranks of the Zipf distribution (the vocabulary's size at most).")
flags.DEFINE_float("zipf_exponent", 1.0, "Exponent s of the Zipf distribution, p(rank r) ~ 1 / r^s.")
flags.DEFINE_integer("seed", 0, "Seed of the generated corpora.")
flags.DEFINE_string("folder", "/tmp/gradual_rnn_corpus_memory", "Where the corpora are generated.")
flags.DEFINE_float("word_list_full_limit_gib", 8.0, "Also measure the word lists at --tokens when "
                   "their extrapolated peak is under this many GiB.")
flags.DEFINE_bool("keep", True, "Keep the generated corpora for the next run.")
flags.DEFINE_enum("measure", None, ["streaming", "word_lists"], "Internal: measure one reader in "
                  "this process on --corpus and print one JSON line.")
flags.DEFINE_string("corpus", None, "Internal: the corpus folder --measure reads.")

SPLITS = ("train", "valid", "test")
WORDS_PER_CHUNK = 1_000_000
MIN_LINE_WORDS, MAX_LINE_WORDS = 10, 30
HELD_OUT_FRACTION = 200  # valid and test each get tokens // HELD_OUT_FRACTION words
GIB = 1 << 30
MIB = 1 << 20


def spell(rank: int) -> str:
    """Word `rank` in letters, bijective base 26: a, b, ..., z, aa, ab, ... (frequent words short)."""
    letters = []
    rank += 1
    while rank:
        rank, digit = divmod(rank - 1, 26)
        letters.append(chr(ord("a") + digit))
    return "".join(reversed(letters))


def zipf_cdf(types: int, exponent: float) -> np.ndarray:
    """The cumulative distribution of ranks 0..types-1, `<float64>[types]`, last value 1."""
    weights = 1.0 / np.arange(1, types + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def write_split(path: str, num_words: int, words: list, cdf: np.ndarray,
                rng: np.random.Generator) -> None:
    """Writes `num_words` Zipf-drawn words to `path`, in lines of MIN..MAX_LINE_WORDS words."""
    with open(path, "wb") as handle:
        remaining = num_words
        while remaining:
            count = min(WORDS_PER_CHUNK, remaining)
            drawn = np.searchsorted(cdf, rng.random(count), side="right")
            chunk = [words[rank] for rank in np.minimum(drawn, len(words) - 1).tolist()]
            lengths = rng.integers(MIN_LINE_WORDS, MAX_LINE_WORDS + 1, size=count // MIN_LINE_WORDS + 1)
            ends = np.minimum(np.cumsum(lengths), count)
            starts = np.concatenate([[0], ends[:-1]])
            lines = [" ".join(chunk[start:end]) for start, end in zip(starts.tolist(), ends.tolist())
                     if end > start]
            handle.write(("\n".join(lines) + "\n").encode("ascii"))
            remaining -= count


def generate(folder: str, train_words: int) -> str:
    """The corpus of `train_words` train words in `folder`, generated unless already there."""
    manifest = {"train_words": train_words, "held_out_words": max(train_words // HELD_OUT_FRACTION, 1000),
                "types": FLAGS.types, "zipf_exponent": FLAGS.zipf_exponent, "seed": FLAGS.seed,
                "version": 1}
    manifest_path = os.path.join(folder, "corpus.json")
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            if json.load(handle) == manifest:
                return folder
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rng = np.random.default_rng([FLAGS.seed, train_words])
    words = [spell(rank) for rank in range(FLAGS.types)]
    cdf = zipf_cdf(FLAGS.types, FLAGS.zipf_exponent)
    started = time.perf_counter()
    for split in SPLITS:
        count = train_words if split == "train" else manifest["held_out_words"]
        write_split(os.path.join(folder, f"{split}.txt"), count, words, cdf, rng)
    print(f"generated {folder} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    return folder


def peak_rss_bytes() -> int:
    """This program's peak resident memory so far: `VmHWM` of /proc/self/status on Linux.

    Not `ru_maxrss`: Linux carries a process's ru_maxrss across fork and exec, so a child started
    by this (larger) parent would report the parent's size until it outgrew it. VmHWM belongs to
    the memory map exec created. Elsewhere ru_maxrss is the fallback (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    maximum = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maximum if sys.platform == "darwin" else maximum * 1024


def read_with_word_lists(folder: str):
    """The package's first `load_corpus`: every split's words in a list, then the ids."""
    from gradual_rnn.data import ptb  # pylint: disable=import-outside-toplevel

    words = {split: ptb.read_words(os.path.join(folder, f"{split}.txt")) for split in SPLITS}
    vocabulary = ptb.build_vocabulary(words["train"])
    conversions = {split: ptb.words_to_ids(words[split], vocabulary, source=split) for split in SPLITS}
    return ptb.Corpus(conversions["train"].ids, conversions["valid"].ids, conversions["test"].ids,
                      vocabulary, {split: conversions[split].unknown_count for split in SPLITS})


def measure(reader_name: str, folder: str) -> dict:
    """Reads `folder` with one reader in this process; seconds and peak RSS above the imports."""
    from gradual_rnn.data import ptb, reader  # pylint: disable=import-outside-toplevel,unused-import

    baseline = peak_rss_bytes()
    started = time.perf_counter()
    corpus = reader.load_corpus(folder) if reader_name == "streaming" else read_with_word_lists(folder)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    tokens = len(corpus.train) + len(corpus.valid) + len(corpus.test)
    return {"reader": reader_name, "tokens": tokens, "train_tokens": len(corpus.train),
            "vocabulary": corpus.vocab_size, "seconds": round(seconds, 1),
            "peak_rss_above_import_bytes": peak - baseline, "baseline_rss_bytes": baseline,
            "fingerprint": corpus.fingerprint()}


def run_measurement(reader_name: str, folder: str) -> dict:
    """`measure` in a fresh Python process (this script with --measure)."""
    command = [sys.executable, os.path.abspath(__file__), f"--measure={reader_name}", f"--corpus={folder}"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    print(f"{reader_name} on {folder}: {result['seconds']} s, "
          f"{result['peak_rss_above_import_bytes'] / GIB:.2f} GiB", file=sys.stderr)
    return result


def cpu_model() -> str:
    """`Model name` as lscpu reports it (or /proc/cpuinfo's `model name`)."""
    try:
        listing = subprocess.run(["lscpu"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        listing = open("/proc/cpuinfo", encoding="utf-8").read()
    for line in listing.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def table(rows: list) -> str:
    """The results as a markdown table."""
    lines = ["| reader | tokens (with <eos>) | vocabulary | seconds | peak RSS above import (MiB) |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        seconds = "—" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"| {row['reader']} | {row['tokens']:,} | {row['vocabulary']:,} | {seconds} | "
                     f"{row['peak_rss_above_import_bytes'] / MIB:,.0f} |")
    return "\n".join(lines)


def benchmark() -> dict:
    """Generates the corpora, measures the readers, extrapolates the word lists; returns the results."""
    large = generate(os.path.join(FLAGS.folder, f"train_{FLAGS.tokens}"), FLAGS.tokens)
    small = generate(os.path.join(FLAGS.folder, f"train_{FLAGS.word_list_tokens}"), FLAGS.word_list_tokens)
    rows = [run_measurement("streaming", large), run_measurement("streaming", small),
            run_measurement("word_lists", small)]
    if rows[1]["fingerprint"] != rows[2]["fingerprint"]:
        raise SystemExit("The two readers gave different corpora on the same files.")
    word_lists = rows[2]
    scale = rows[0]["tokens"] / word_lists["tokens"]
    extrapolated = dict(word_lists, reader=f"word_lists, extrapolated linearly from {word_lists['tokens']:,}",
                        tokens=rows[0]["tokens"], train_tokens=rows[0]["train_tokens"],
                        vocabulary=rows[0]["vocabulary"], seconds=None,
                        peak_rss_above_import_bytes=int(word_lists["peak_rss_above_import_bytes"] * scale),
                        fingerprint=None)
    rows.append(extrapolated)
    if scale > 1 and extrapolated["peak_rss_above_import_bytes"] < FLAGS.word_list_full_limit_gib * GIB:
        rows.append(run_measurement("word_lists", large))
        if rows[-1]["fingerprint"] != rows[0]["fingerprint"]:
            raise SystemExit("The two readers gave different corpora on the same files.")
    if not FLAGS.keep:
        shutil.rmtree(FLAGS.folder, ignore_errors=True)
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "python": sys.version.split()[0],
            "numpy": np.__version__, "command": " ".join(sys.argv), "rows": rows}


def main(argv):
    del argv
    if FLAGS.measure:
        print(json.dumps(measure(FLAGS.measure, FLAGS.corpus)))
        return
    results = benchmark()
    print(json.dumps(results))
    print(table(results["rows"]))


if __name__ == "__main__":
    app.run(main)
