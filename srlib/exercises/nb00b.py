"""Exercises of notebook 00b (dense non-local attention): temperature, scaled scores, non-local means."""

from __future__ import annotations

import math

from . import exercise

#: Side of the scene of notebook 00b (a 56 x 56 LR crop).
SCENE_SIDE = 56


@exercise("00b.1", "Temperature", "★ warm-up",
          hint="a uniform distribution over n keys has entropy ln n")
def _uniform_support(answer):
    expected = SCENE_SIDE * SCENE_SIDE  # exp(ln L) = L keys
    ok = float(answer) == expected
    return ok, f"{expected} keys: every position" if ok else f"{answer!r} is not it"


exercise("00b.2", "Flattening on the image", "★★ practice")(None)  # open question: no check


@exercise("00b.3", "Scaled scores", "★★ practice",
          hint="with s ~ N(0, sigma^2), E[exp(s)] = exp(sigma^2 / 2); the entropy tends to ln n - sigma^2/2")
def _entropy_limit(answer):
    expected = math.log(20**2) - 2.0**2 / 2
    ok = abs(float(answer) - expected) < 0.01
    return ok, f"ln 400 - 2 = {expected:.3f} nats" if ok else f"{float(answer):.3f} nats is not it"


@exercise("00b.4", "Non-local means", "★★ practice",
          hint="noise of 0.05 per RGB channel is about 7 grey levels on Y; the filtered image must score higher")
def _nlm_psnr(answer):
    noisy, filtered = (float(v) for v in answer)
    if not 28.0 < noisy < 33.0:
        return False, (f"the noisy image should score about 30 to 31 dB on Y (0.05 noise per channel), "
                       f"got {noisy:.2f} dB: PSNR on Y of the noisy image against the clean one?")
    if not filtered > noisy:
        return False, f"the filtered image ({filtered:.2f} dB) should score above the noisy one ({noisy:.2f} dB)"
    return True, f"filtering gains {filtered - noisy:.2f} dB"


exercise("00b.5", "Is a query its own best match?", "★★★ challenge")(None)  # open question
