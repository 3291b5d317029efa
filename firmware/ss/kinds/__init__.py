# One sampler per device kind.  A sampler reads its drivers from node.hw and
# stores quantized readings with node.add(metric_id, q, t, ms).
#   wake mode (bin_fill, air):   await sample(t)  -> True when a threshold fired
#   continuous (noise, road):    await run()      -> never returns


def sampler(node):
    k = node.cfg["kind"]
    if k == "bin_fill":
        from ss.kinds.bin_fill import BinFill as S
    elif k == "air":
        from ss.kinds.air import Air as S
    elif k == "noise":
        from ss.kinds.noise import Noise as S
    else:
        from ss.kinds.road import Road as S
    return S(node)
