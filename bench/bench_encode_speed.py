"""How fast format version 2 codes are written and read: the table-driven encoder of
`tb_attention_plugin.encoding` against the encoder first written (`tests/v2_reference.py`),
side by side in one run.

For a causal head with a first-token sink and a bidirectional head (`tests/synthetic`) at 1024
and 4096 tokens, times (median of --repeats, old and new interleaved):

- `codes`: weights -> stored bytes before zlib (`quantize` + `pack_codes`), what was rewritten;
- `payload`: the whole payload blob as the writers make it (codes + `zlib.compress` level 6,
  unchanged: the same bytes have to come out);
- `decode`: stored bytes -> level indices (`unpack_v2`) -> float32 weights (`codes_to_weights`);
- `step`: the payloads of a whole step of that head repeated over 12 heads (fewer where one
  step may not hold 12): the old encoder one head after another, the new one as `encode_step`
  builds them (one head per thread, on as many threads as the process has CPUs).

and prints each ratio new/old (below 1: faster). Every pair of outputs is also compared byte for
byte. `--zlib` also times other zlib levels and strategies on the same heads' stored bytes
against level 6 (time and size ratios; writers keep level 6, whose bytes the format's tests
pin). `--exhaustive` additionally checks the table against the rule on every float32 fraction
in [2**-22, 1] (below 2**-22 both give level 0): about 190 million values, a few minutes.

    python bench/bench_encode_speed.py [--tokens 1024 4096] [--repeats 5] [--exhaustive] [--zlib]
"""

import argparse
import os
import statistics
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import v2_reference as reference  # noqa: E402
from synthetic import attention_head  # noqa: E402

from tb_attention_plugin import encoding  # noqa: E402


def old_codes(weights, mask):
    codes, _ = reference.quantize(weights, mask)
    return reference.pack_codes(codes)


def new_codes(weights, mask):
    codes, _ = encoding.quantize(weights, mask)
    return encoding.pack_codes(codes)


def old_decode(raw, shape, scale):
    return encoding.v2_table(scale)[reference.unpack_v2(raw, *shape)]


def new_decode(raw, shape, scale):
    return encoding.codes_to_weights(encoding.unpack_v2(raw, *shape), scale)


def old_step(weights, mask):
    return [zlib.compress(old_codes(w, None if mask is None else m), 6)
            for w, m in zip(weights[0], weights[0] if mask is None else mask[0])]


def new_step(weights, mask):
    return encoding._encode_payloads(weights, mask, 2)[0]


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def side_by_side(old, new, args, repeats, same):
    """`(median old seconds, median new seconds)`, interleaved; asserts `same(old, new)`."""
    old_times, new_times = [], []
    for _ in range(repeats):
        old_time, old_result = timed(old, *args)
        new_time, new_result = timed(new, *args)
        assert same(old_result, new_result), "outputs differ"
        old_times.append(old_time)
        new_times.append(new_time)
    return statistics.median(old_times), statistics.median(new_times)


def measure(kind, tokens, repeats):
    weights, mask = attention_head(kind, tokens, seed=tokens)
    scale = float(weights[mask].max() if mask is not None else weights.max())
    # The first use builds the level table (about 15 ms, once per process): not per head.
    new_codes(weights[:1, :16], None)
    raw = new_codes(weights, mask)
    shape = weights.shape
    rows = {
        "codes": side_by_side(old_codes, new_codes, (weights, mask), repeats, bytes.__eq__),
        "payload": side_by_side(
            lambda w, m: zlib.compress(old_codes(w, m), 6),
            lambda w, m: zlib.compress(new_codes(w, m), 6),
            (weights, mask), max(1, repeats // 2), bytes.__eq__),
        "decode": side_by_side(old_decode, new_decode, (raw, shape, scale), repeats,
                               lambda a, b: np.array_equal(a, b, equal_nan=True)),
    }
    heads = max(1, min(12, encoding.MAX_VALUES_PER_STEP // weights.size))
    step = np.broadcast_to(weights, (1, heads) + shape)
    step_mask = None if mask is None else np.broadcast_to(mask, step.shape)
    rows["step"] = side_by_side(old_step, new_step, (step, step_mask), max(1, repeats // 2),
                                list.__eq__)
    return rows


ZLIB_SETTINGS = [("level 1", 1, zlib.Z_DEFAULT_STRATEGY), ("level 9", 9, zlib.Z_DEFAULT_STRATEGY),
                 ("Z_RLE", 6, zlib.Z_RLE), ("Z_HUFFMAN_ONLY", 6, zlib.Z_HUFFMAN_ONLY)]


def deflated(raw, level, strategy):
    compressor = zlib.compressobj(level, zlib.DEFLATED, 15, 8, strategy)
    return compressor.compress(raw) + compressor.flush()


def zlib_rows(kind, tokens, repeats):
    """`[(setting, time ratio, size ratio)]` against level 6 on one head's stored bytes."""
    weights, mask = attention_head(kind, tokens, seed=tokens)
    raw = new_codes(weights, mask)
    default = lambda r: deflated(r, 6, zlib.Z_DEFAULT_STRATEGY)  # noqa: E731
    rows = []
    for name, level, strategy in ZLIB_SETTINGS:
        other = lambda r, level=level, strategy=strategy: deflated(r, level, strategy)  # noqa: E731
        old, new = side_by_side(default, other, (raw,), repeats, lambda a, b: True)
        rows.append((name, new / old, len(other(raw)) / len(default(raw))))
    return rows


def exhaustive_check(chunk=1 << 22):
    """Every float32 fraction in [2**-22, 1]: the table's level equals the rule's."""
    low = int(np.array(2.0 ** -22, np.float32).view(np.int32))
    high = int(np.array(1.0, np.float32).view(np.int32))
    start = time.perf_counter()
    for first in range(low, high + 1, chunk):
        bits = np.arange(first, min(high + 1, first + chunk), dtype=np.int32)
        x = bits.view(np.float32)
        got = encoding.quantize(np.append(x, np.float32(1))[np.newaxis])[0][0, :-1]
        want = reference.levels(x)
        if not np.array_equal(got, want):
            where = np.flatnonzero(got != want)[0]
            raise AssertionError("fraction %r: table %d, rule %d" % (float(x[where]), got[where],
                                                                    want[where]))
    print("exhaustive: the table equals the rule on all %d float32 fractions in [2**-22, 1] "
          "(%.0f s)" % (high - low + 1, time.perf_counter() - start))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exhaustive", action="store_true")
    parser.add_argument("--zlib", action="store_true")
    args = parser.parse_args()

    print("%-14s %6s %-8s %11s %11s %9s" % ("head", "tokens", "part", "old ms", "new ms",
                                          "new/old"))
    for tokens in args.tokens:
        for kind in ("causal", "bidirectional"):
            for part, (old, new) in measure(kind, tokens, args.repeats).items():
                print("%-14s %6d %-8s %11.1f %11.1f %8.2fx"
                      % (kind, tokens, part, old * 1000, new * 1000, new / old))
    if args.zlib:
        print("%-14s %6s %-16s %10s %10s" % ("head", "tokens", "zlib", "time/l6", "size/l6"))
        for tokens in args.tokens:
            for kind in ("causal", "bidirectional"):
                for name, time_ratio, size_ratio in zlib_rows(kind, tokens, args.repeats):
                    print("%-14s %6d %-16s %9.2fx %9.3fx" % (kind, tokens, name, time_ratio,
                                                            size_ratio))
    if args.exhaustive:
        exhaustive_check()


if __name__ == "__main__":
    main()
