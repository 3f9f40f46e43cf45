"""Which seqs the writer hands out, in one place: what is committed, and what a batch expects.

Seqs are given inside the write transaction (`batch.Transaction.begin` reads the highest one
there), so two writers on one file can never share a seq. Everything here only predicts that
answer, so the loop can build a batch's notifications and frames while the thread stores its rows
(see `staging.Stager.stage`): a wrong prediction (a refused insert, another process writing) costs
building them again after the commit, for that batch only.

The loop and the writer thread each keep their own view: a batch is begun on the thread before the
loop has finished publishing the one before it, so the thread knows about seqs the loop has not
heard of yet.
"""

from __future__ import annotations


class SeqCounter:
    """The loop's view (`next_seq`, the guess) and the writer thread's (`thread_start`)."""

    __slots__ = ("_guess", "_thread_last", "next_seq")

    def __init__(self, next_seq: int) -> None:
        # The seq after the last one this process saw committed; never below a purged seq (a
        # client may hold one as its cursor), so it starts past those too.
        self.next_seq = next_seq
        # The first seq the next batch staged is expected to get: past what is being committed.
        self._guess = 0
        # Touched only on the writer thread: the highest seq it has committed.
        self._thread_last = 0

    @property
    def last_committed(self) -> int:
        return self.next_seq - 1

    # -- the event loop ----------------------------------------------------------------------

    def batch_guess(self) -> int:
        """The first seq a batch staged now is expected to get."""
        return max(self.next_seq, self._guess)

    def staged(self, following: int) -> None:
        """A batch was staged and is on its way to the thread: the next one follows `following`."""
        self._guess = following

    def committed(self, last_seq: int, in_flight: int) -> None:
        """A batch committed up to `last_seq`; `in_flight` notifications of the batch begun after
        it are expected to follow it. A guess that went wrong is wrong once, not for good."""
        self.next_seq = max(self.next_seq, last_seq + 1)
        self._guess = last_seq + 1 + in_flight

    def failed(self) -> None:
        """A batch failed whole: guess afresh from what is known committed."""
        self._guess = 0

    # -- the writer thread -------------------------------------------------------------------

    def thread_start(self, loop_next_seq: int) -> int:
        """The lowest seq a transaction begun now may give (the database's own maximum decides
        beyond that)."""
        return max(loop_next_seq, self._thread_last + 1)

    def thread_committed(self, last_seq: int) -> None:
        self._thread_last = max(self._thread_last, last_seq)
