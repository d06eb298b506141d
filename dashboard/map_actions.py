"""The Error map's actions, outside its page script: each callback reads what the person
typed or selected from session state, applies one edit through pipeline.analysis.taxonomy, and
says what it did (a refused edit is a message, never a traceback).

Callbacks run before the rerun that a click triggers, so that rerun draws the edited map
once (instead of drawing, editing, drawing again); they read widget values from
session_state, so text typed just before the click counts. A MapActions is made on every
run with the taxonomy that run drew, so an edit applies to what the person saw."""

from __future__ import annotations

import common
import map_view
import streamlit as st

from pipeline.analysis import taxonomy
from pipeline.storage.store import Store


class MapActions:
    def __init__(self, store: Store, tax: taxonomy.Taxonomy):
        self.s, self.tax = store, tax
        self.ss = st.session_state
        # Widgets whose values describe the taxonomy as it was (the merge box, titles,
        # descriptions, pickers) carry a generation in their key, and every edit starts a
        # new one: they are drawn afresh from what is stored. Deleting their state is not
        # enough: the browser keeps the old value and sends it back with the next click
        # (a stale merge chip; an old title that Rename wrote back).
        self.gen = self.ss.setdefault("gen", 0)

    def wk(self, name: str) -> str:
        """The key of a widget drawn from the taxonomy (this generation's)."""
        return f"{name}~{self.gen}"

    def reset_widgets(self) -> None:
        self.ss["gen"] = self.ss.get("gen", 0) + 1
        # an edit consumes the selection (a new plotly_chart starts with none; the map
        # component keeps its frame, so it is told which of its values are spent)
        map_view.consume("map")
        for key in [x for x in self.ss if isinstance(x, str) and "~" in x]:
            del self.ss[key]

    def _value(self, name: str, default=None):
        return self.ss.get(self.wk(name), default)

    # -- what is selected on the map --------------------------------------------------------

    def _points(self) -> list[dict]:
        return map_view.selected_points("map")  # the map component's (map_view.py)

    def selected(self) -> list[int]:
        """Keyphrase ids behind the selected dots (a dot stands for identical keyphrases)."""
        dots = {int(q["customdata"] if not isinstance(q["customdata"], list)
                    else q["customdata"][0])
                for q in self._points() if q.get("customdata") is not None}
        return taxonomy.expand(sorted(dots), self.tax,
                               show_excluded=self.ss.get("show_excl", False))

    def n_dots(self) -> int:
        return len({str(q.get("customdata")) for q in self._points()
                    if q.get("customdata") is not None})

    # -- edits ------------------------------------------------------------------------------

    def apply(self, fn, *args, msg: str, **kw):
        """Run one edit and say what it did; returns what the edit returned (None if it
        was refused)."""
        if fn not in (taxonomy.undo, taxonomy.redo):
            kw["tax"] = self.tax  # what the user saw and acted on
        try:
            out = fn(self.s, *args, author="app", **kw)
        except ValueError as e:  # a refused edit is shown, never a traceback
            common.flash(str(e), error=True)
            return None
        self.reset_widgets()
        common.flash(msg.format(out=out))
        return out

    def use(self, cid: str, msg: str) -> None:
        """Make a clustering current (an edit: Undo goes back)."""
        taxonomy.use_clustering(self.s, cid, author="app")
        self.reset_widgets()
        common.flash(msg)

    def assign(self) -> None:
        sel, tid = self.selected(), self._value("assign_to")
        self.apply(taxonomy.move, kp_ids=sel, type_id=tid,
                   msg=f"moved {len(sel)} keyphrases to type {tid}")

    def split(self) -> None:
        sel = self.selected()
        tid = self.apply(taxonomy.split, kp_ids=sel, title=self._value("split_title"),
                         msg=f"new type {{out}} from {len(sel)} keyphrases")
        if tid is not None:
            self.ss["edit_type"] = tid  # the type editor opens on the new type

    def exclude_selection(self) -> None:
        sel = self.selected()
        self.apply(taxonomy.exclude, kp_ids=sel, msg=f"excluded {len(sel)} keyphrases")

    def merge(self) -> None:
        ids = self._value("merge_ids") or []
        if self.apply(taxonomy.merge, ids, title=self._value("merge_title") or None,
                      msg=f"merged types {ids}") is not None:
            self.ss["edit_type"] = self.s.edits()[-1]["payload"]["into"]  # opens on it

    def edit_from_legend(self) -> None:
        """A row of the types table clicked: that type's editor opens (the noise row, last,
        has none)."""
        rows = ((self.ss.get(self.wk("legend")) or {}).get("selection") or {}).get("rows")
        visible = self.tax.visible_types()
        if rows and rows[0] < len(visible):
            self.ss["edit_type"] = self.ss[self.wk("edit_type")] = visible[rows[0]].type_id

    def rename(self, tid: int) -> None:
        self.apply(taxonomy.rename, tid, self._value(f"title-{tid}"), msg=f"renamed type {tid}")

    def describe(self, tid: int) -> None:
        self.apply(taxonomy.describe, tid, self._value(f"desc-{tid}"),
                   msg=f"described type {tid}")

    def exclude_type(self, tid: int, include: bool) -> None:
        self.apply(taxonomy.exclude, type_id=tid, include=include,
                   msg=f"{'included' if include else 'excluded'} type {tid}")

    def undo(self, edit_id: int | None = None) -> None:
        args = () if edit_id is None else (edit_id,)
        self.apply(taxonomy.undo, *args,
                   msg="undid the last edit" if edit_id is None else f"undid edit {edit_id}")

    def undo_picked(self) -> None:
        self.undo(self._value("undo_pick"))

    def redo(self) -> None:
        self.apply(taxonomy.redo, msg="redid the last undone edit")

    def assign_noise(self) -> None:
        floor = self._value("noise_floor") or 0.0
        self.apply(taxonomy.assign_noise, None if floor <= 0 else float(floor),
                   msg="assigned {out[assigned]} unassigned keyphrases to their nearest "
                       "types ({out[left]} left as noise)")

    def retitle(self, type_id: int | None = None) -> None:
        # a job like every long step: with an instructor it is one call per type
        jid = common.submit(self.s, "retitle", {} if type_id is None else
                            {"type_ids": [type_id]}, show=lambda m: common.flash(m, error=True))
        if jid is None:  # refused (a read-only store ...): the flash says why
            return
        self.ss.setdefault("watch-error_map", set()).add(jid)  # redrawn when it ends
        common.flash(f"retitle job #{jid} started (" + (
            "titles a person gave are kept" if type_id is None else
            f"type {type_id}, even if a person renamed it") + "); the map redraws when it ends")
