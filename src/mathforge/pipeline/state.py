"""``state.json``: the run's lineage. Which stage wrote which table, from which inputs, in recipe order.

A stage's inputs are resolved here, never guessed from "the latest table of a kind": an input of kind K of the stage
at position i is the output of kind K of the nearest stage before i in ``order`` (the recipe's stage order; a stage
run on its own that the recipe does not name comes after all of them). So rerunning verify, or retrying generate,
can never make export read the unverified table, and curate never reads its own output.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathforge.errors import ConfigError, DataError

STATE_FILE = "state.json"
FORMAT = 2
PRODUCERS = {"problems": "load", "samples": "generate", "export": "export"}  # who to name when nothing wrote a kind


@dataclass(frozen=True)
class TableRef:
    """A committed output: which stage wrote it, under which output name, and the commit it came from."""

    stage: str
    output: str
    kind: str
    path: str  # relative to the run directory
    commit: int
    rows: int | None = None


class RunState:
    """Lineage of one run directory, persisted to ``state.json`` (replaced atomically on every change)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.file = run_dir / STATE_FILE
        self.order: list[str] = []
        self.declared: dict[str, list[str]] = {}  # stage id -> output kinds its recipe stage declares
        self.stages: dict[str, dict[str, Any]] = {}
        self.commit = 0
        self.ledger_ok = 0  # answered requests the ledger held at the last commit (guards against a lost ledger)
        if self.file.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"garbled ({exc}). It records which stage wrote which table; delete it and rerun the "
                            "recipe (`mathforge run RECIPE -o RUN_DIR`) to rebuild it: tables are rewritten from the "
                            "ledger, nothing already answered is paid again", file=str(self.file)) from None
        if "stages" not in data:  # format 1: {"tables": {kind: file}}: the latest of each kind, without lineage
            for kind, name in (data.get("tables") or {}).items():
                sid = f"legacy-{kind}"
                self.order.append(sid)
                self.stages[sid] = {"name": sid, "status": "done", "inputs": {},
                                    "outputs": {kind: {"kind": kind, "path": name, "commit": 0}}}
            return
        self.order = list(data.get("order") or [])
        self.declared = dict(data.get("declared") or {})
        self.stages = dict(data.get("stages") or {})
        self.commit = int(data.get("commit") or 0)
        self.ledger_ok = int(data.get("ledger_ok") or 0)

    def save(self) -> None:
        data = {"format": FORMAT, "commit": self.commit, "ledger_ok": self.ledger_ok, "order": self.order,
                "declared": self.declared, "stages": self.stages, "tables": self.latest_tables()}
        tmp = self.run_dir / f".{STATE_FILE}.mf-tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.file)

    # -- lineage -------------------------------------------------------------------------------------------------
    def set_order(self, stage_ids: list[str], declared: dict[str, list[str]] | None = None) -> None:
        """The recipe's stage order (and the output kinds each declares). A recorded stage it does not name (a table
        given to a CLI command, a stage run on its own) stays right after the stage it followed before, or first
        when it followed none."""
        if declared is not None:
            self.declared = {k: sorted(v) for k, v in declared.items()}
        order = list(stage_ids)
        for i, sid in enumerate(self.order):
            if sid in order:
                continue
            before = next((s for s in reversed(self.order[:i]) if s in order), None)
            order.insert(order.index(before) + 1 if before is not None else 0, sid)
        self.order = order

    def _outputs(self, stage_id: str) -> dict[str, dict[str, Any]]:
        st = self.stages.get(stage_id) or {}
        return st.get("outputs") or {} if st.get("status") == "done" else {}

    def resolve(self, stage_id: str, kind: str, *, strict: bool = True) -> TableRef | None:
        """The table of ``kind`` that the stage ``stage_id`` reads: the output of the nearest earlier stage in
        ``order`` that writes ``kind``. When that stage has not run (or its output is gone) it is an error, never a
        reason to read an older table; ``strict=False`` (readers of a whole run) skips such stages instead."""
        pos = self.order.index(stage_id) if stage_id in self.order else len(self.order)
        for sid in reversed(self.order[:pos]):
            outputs = self._outputs(sid)
            writes = set(self.declared.get(sid, ())) | {ref["kind"] for ref in outputs.values()}
            if kind not in writes:
                continue
            for out, ref in outputs.items():
                if ref["kind"] == kind and (self.run_dir / ref["path"]).exists():
                    return TableRef(sid, out, kind, ref["path"], ref.get("commit", 0), ref.get("rows"))
            if strict:
                what = "has not run yet" if not outputs else "lost its output (the file is gone)"
                raise ConfigError(f"{self.run_dir}: stage '{stage_id}' reads {kind} from stage '{sid}', which {what}; "
                                  f"run it first (`mathforge run RECIPE -o {self.run_dir} --from {sid}`)")
        return None

    def latest(self, kind: str) -> TableRef | None:
        """The final table of ``kind`` in lineage order (what a reader of the whole run looks at)."""
        return self.resolve("\0after-all", kind, strict=False)

    def latest_tables(self) -> dict[str, str]:
        kinds = {ref["kind"] for sid in self.order for ref in self._outputs(sid).values()}
        return {k: ref.path for k in sorted(kinds) if (ref := self.latest(k)) is not None}

    def record(self, stage_id: str, name: str, inputs: dict[str, TableRef], outputs: dict[str, tuple[str, str, int]],
               *, status: str = "done", incomplete: dict[str, Any] | None = None) -> None:
        """A finished stage: what it read (with the commits it saw) and what it wrote, under a new commit number."""
        self.commit += 1
        if stage_id not in self.order:
            self.order.append(stage_id)
        self.stages[stage_id] = {
            "name": name,
            "status": status,
            "finished": round(time.time(), 3),
            "inputs": {n: {"stage": r.stage, "output": r.output, "path": r.path, "commit": r.commit}
                       for n, r in inputs.items()},
            "outputs": {n: {"kind": kind, "path": path, "rows": rows, "commit": self.commit}
                        for n, (kind, path, rows) in outputs.items()},
            **({"incomplete": incomplete} if incomplete else {}),
        }

    def require(self, stage_id: str, kind: str) -> TableRef:
        ref = self.resolve(stage_id, kind)
        if ref is None:
            producer = PRODUCERS.get(kind, kind)
            raise ConfigError(f"{self.run_dir}: stage '{stage_id}' reads {kind}, but no stage before it in this run "
                              f"wrote {kind}; run a '{producer}' stage before this one")
        return ref
