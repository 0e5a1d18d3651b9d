"""How pytest-xdist hands a run's items to its workers: by case (xdist's loadgroup, so that a case's
reference is computed once however many backends judge it), with one repair.

xdist's loadgroup (loadscope) puts a crashed worker's unfinished group back in the queue with the item
that crashed it still marked unfinished, so each replacement worker runs that item again and crashes
again, until `--max-worker-restart` stops the run with its other cases unjudged. Here the crashed item
counts as done: its crash is recorded once (xdist reports it as the crash item) and the rest goes on."""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadGroupScheduling


class CaseGroupScheduling(LoadGroupScheduling):
    def remove_node(self, node: Any) -> str | None:
        workload = self.assigned_work.pop(node)
        unfinished = [(group, item) for group, unit in workload.items() for item, done in unit.items() if not done]
        if not unfinished:
            return None
        group, crashed = unfinished[0]  # a worker runs its items in order: the first unfinished one crashed it
        workload[group][crashed] = True
        self.workqueue.update({g: unit for g, unit in workload.items() if not all(unit.values())})
        for other in self.assigned_work:
            self._reschedule(other)
        return crashed
