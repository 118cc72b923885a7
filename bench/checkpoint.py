"""Cost of checkpoint integrity: the per-array digests written with every checkpoint and checked
on every restore, next to the save and the verified restore themselves.

    python bench/checkpoint.py                 # a 256 MiB float32 state, 3 repeats
    python bench/checkpoint.py --mib 1024 --leaves 200

Prints one JSON object: seconds (medians) for the digests of the whole state, a save, and a
verified restore, and the digest rate in seconds per GiB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=float, default=256.0, help="state size in MiB")
    p.add_argument("--leaves", type=int, default=100, help="number of arrays")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import flax
    import jax
    import numpy as np

    from scoresde_jax.run.checkpoint import Checkpointer, state_digests

    n = int(args.mib * 2**20 / 4 / args.leaves)
    rng = np.random.default_rng(0)

    @flax.struct.dataclass
    class State:
        step: jax.Array
        params: dict

    params = {
        f"w{i}": jax.numpy.asarray(rng.standard_normal(n, np.float32)) for i in range(args.leaves)
    }
    state = State(step=jax.numpy.asarray(1, jax.numpy.int32), params=params)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    digest_s = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        state_digests(state)
        digest_s.append(time.perf_counter() - t0)
    save_s, restore_s = [], []
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Checkpointer(tmp)
            state = state.replace(step=jax.numpy.asarray(r + 1, jax.numpy.int32))
            t0 = time.perf_counter()
            ckpt.save(state)
            ckpt.wait()
            save_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            restored = Checkpointer(tmp, read_only=True).restore_verified(abstract)
            restore_s.append(time.perf_counter() - t0)
            assert restored.verified
            ckpt.close()
    out = {
        "state_mib": round(nbytes / 2**20, 1),
        "leaves": args.leaves + 1,
        "digest_s": round(statistics.median(digest_s), 3),
        "digest_s_per_gib": round(statistics.median(digest_s) / (nbytes / 2**30), 2),
        "save_s": round(statistics.median(save_s), 3),
        "verified_restore_s": round(statistics.median(restore_s), 3),
        "repeats": args.repeats,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
