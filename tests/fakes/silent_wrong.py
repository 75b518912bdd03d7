"""Right when it logs, wrong when it does not: the unlogged (timed) path skips the weight updates."""

from tests.fakes._base import Fake


class SilentWrong(Fake):
    NAME = "fake-silent-wrong"

    def run(self, state, iterations, log_every):
        if log_every:
            super().run(state, iterations, log_every)
        # log_every == 0: returns without training, as a backend with a broken fast path would
