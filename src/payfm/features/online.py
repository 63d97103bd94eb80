"""The online feature engine: for a new charge, the exact offline value of every feature, then the update.

State is kept per (state, entity key) in the objects of :mod:`payfm.features.state`, one state per entity and
tile resolution, in a :class:`~payfm.features.stores.StateStore` (process memory by default, Redis for several
serving processes). The reads and updates are Python generated and compiled per feature set
(:mod:`payfm.features.online_codegen`), whose math mirrors the offline SQL.

Sums are exact integers (amounts are integer minor units), so means and standard deviations are computed from
the same integers as the backfill and agree to the last bit or within 1e-9 relative.

Applying the same charge or outcome id twice counts once. The state events leave does not depend on the order
they arrive in (a late event is counted in its own tile; an all-time ``last`` keeps the value of the latest
event in the backfill's order, by time then id; but of a charge's fraud disputes the first applied counts),
while a charge's features count only the events applied before it: events must arrive in time order per key
for exact parity of every read with the backfill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from payfm.features.catalog import feature_set_arg
from payfm.features.definitions import (
    AUTHORIZATION,
    ENTITIES,
    LATE_COLUMNS,
    FeatureSet,
    authorization_claim,
    outcome_amount_usd,
    outcome_claim,
)
from payfm.features.online_codegen import compile_engine
from payfm.features.online_plan import label_fields, plan, write_columns
from payfm.features.state import State
from payfm.features.stores import MemoryStore, StateStore


def window_ttl_s(fset: FeatureSet) -> dict[int, int]:
    """Per windowed state: seconds of inactivity after which it no longer matters (+1 h)."""
    return {sp.index: sp.keep * sp.res // 1_000_000 + 3600 for sp in plan(fset) if sp.res}


def entity_key(entity: str, event: Mapping[str, Any]) -> Any:
    """The key of ``entity`` in ``event``: a value, a tuple for pairs, or None when a part is missing."""
    cols = ENTITIES[entity]
    if len(cols) == 1:
        return event.get(cols[0])
    key = tuple(event.get(c) for c in cols)
    return None if None in key else key


class OnlineFeatures:
    """Online feature state for one feature set, in process memory.

    >>> from payfm.features.catalog import tiny_set
    >>> online = OnlineFeatures(tiny_set())
    >>> charge = {"charge_id": "ch_1", "created_us": 0, "card_fingerprint": "fp_1", "amount_usd": 500}
    >>> online.features_then_update(charge)["card.count_charges_1h"]
    0.0
    >>> online.features_then_update({**charge, "charge_id": "ch_2", "created_us": 1})["card.count_charges_1h"]
    1.0
    """

    def __init__(self, fset: FeatureSet, store: StateStore | None = None) -> None:
        fset = feature_set_arg(fset, "OnlineFeatures")  # (a set's name: an AttributeError, before)
        self.fset = fset
        self.store: StateStore = store if store is not None else MemoryStore()
        self.names = fset.names
        self.engine = compile_engine(fset)
        self._keys = self.engine.keys
        self._state_keys = self.engine.state_keys
        self._read = self.engine.read
        self._write = self.engine.write
        self._read_update = self.engine.read_update
        self.label_fields = label_fields(self.engine.plans)
        self.write_columns = sorted({*write_columns(self.engine.plans), *self.label_fields})
        # Whether an outcome's own amount is read (its charge's amount and currency are then stored with it).
        self.outcome_amounts = any(f.reads_outcome_amount for f in fset.aggregates)

    def __repr__(self) -> str:
        store = type(self.store).__name__.removesuffix("Store").lower() or type(self.store).__name__
        return f"OnlineFeatures({self.fset.name}@{self.fset.version}, {store} store)"

    # ---- reading ----------------------------------------------------------------------------------------
    def vector(self, charge: Mapping[str, Any]) -> list[float | None]:
        """Every feature of ``charge`` as of just before it, in feature-set order (the state is unchanged)."""
        keys = self._keys(charge)
        ts = int(charge["created_us"])
        return self.store.run(
            self._state_keys["*"](keys), None, None, lambda states, _: self._read(states, keys, charge, ts)
        )

    def features(self, charge: Mapping[str, Any]) -> dict[str, float | None]:
        """Every feature of ``charge`` by name, as of just before it (the state is unchanged)."""
        return dict(zip(self.names, self.vector(charge), strict=True))

    # ---- updating ---------------------------------------------------------------------------------------
    def features_then_update(self, charge: Mapping[str, Any]) -> dict[str, float | None]:
        """The decision-time path: read every feature, then add the charge, in one atomic step.

        Idempotent by charge id: a charge already applied is read but not counted again.
        """
        return dict(zip(self.names, self.vector_then_update(charge), strict=True))

    def vector_then_update(self, charge: Mapping[str, Any]) -> list[float | None]:
        """:meth:`features_then_update` as a list in feature-set order."""
        return self.vector_then_claim(charge)[0]

    def vector_then_claim(self, charge: Mapping[str, Any]) -> tuple[list[float | None], bool]:
        """:meth:`vector_then_update`, and whether this call claimed the charge's id (counted it): False
        when the store held it already, as another process sharing the store may have claimed it between
        a read of :meth:`~payfm.features.stores.Store.charge_fields` and this call."""
        keys = self._keys(charge)
        get = charge.get
        fields = {k: get(k) for k in self.label_fields}
        ts = int(charge["created_us"])
        read_update = self._read_update
        store = self.store
        if type(store) is MemoryStore:  # the embedded default: the same steps, without the store call
            claimed = store.claim_charge(str(charge["charge_id"]), fields)
            out = read_update(store.states, keys, charge, ts, claimed)
            store.advance(ts)
            return out, claimed

        def step(states: MutableMapping[Any, State], claimed: bool) -> tuple[list[float | None], bool]:
            return read_update(states, keys, charge, ts, claimed), claimed

        result = store.run(self._state_keys["*"](keys), str(charge["charge_id"]), fields, step)
        store.advance(ts)
        return result

    def update(self, charge: Mapping[str, Any]) -> bool:
        """Add ``charge`` to the state; False (and no change) if its id was already applied."""
        keys = self._keys(charge)
        get = charge.get
        fields = {k: get(k) for k in self.label_fields}
        ts = int(charge["created_us"])
        write = self._write.get("charges")
        skeys = self._state_keys["charges"](keys) if write is not None else []
        cid = str(charge["charge_id"])

        def step(states: MutableMapping[Any, State], claimed: bool) -> bool:
            if claimed and write is not None:
                write(states, keys, charge, ts, cid)
            return claimed

        applied = self.store.run(skeys, cid, fields, step)
        self.store.advance(ts)
        return applied

    def update_many(self, charges: Iterable[Mapping[str, Any]]) -> int:
        """:meth:`update` for many charges in order (warming a state from history); how many were new.

        In process memory this skips the per-charge store call: the same claim and the same update, inlined.
        """
        store = self.store
        write = self._write.get("charges")
        if not isinstance(store, MemoryStore) or write is None:
            return sum(self.update(c) for c in charges)
        claimed, states, keys_of, fields = store.charges, store.states, self._keys, self.label_fields
        n = 0
        top: int | None = None
        for charge in charges:
            cid = str(charge["charge_id"])
            if cid in claimed:
                continue
            get = charge.get
            claimed[cid] = {k: get(k) for k in fields}
            ts = int(charge["created_us"])
            write(states, keys_of(charge), charge, ts, cid)
            top = ts if top is None or ts > top else top
            n += 1
        if top is not None:
            store.advance(top)
        return n

    def apply_authorization(self, charge: Mapping[str, Any]) -> bool:
        """Count the authorization result of a charge decided without it: ``charge`` is that charge (its
        :attr:`write_columns` and ``created_us``) with the ``outcome`` the processor reported.

        The charge was counted when it was decided; now the aggregates filtered on its outcome (declines,
        authorizations, blocks) count it too, at the charge's own time, so that the state ends as if the
        charge had carried its outcome (the offline backfill reads the event log's charges, outcome and all).
        The charge's stored fields take the outcome too, so that its later refunds, disputes and EFWs count in
        the aggregates filtered on their charge's outcome. Features of charges decided between the charge
        and its result do not see it; an ``all-time`` ``last`` over such a filter takes the charge's value
        unless it holds a later charge's (by time, then id), as the backfill does. Returns False (and changes
        nothing) when the charge was never counted, was counted with an outcome (e.g. from the event log), or
        its result was counted already.
        """
        cid = str(charge["charge_id"])
        write = self._write.get(AUTHORIZATION)
        fields = self.store.charge_fields(cid)
        if fields is None or fields.get("outcome") is not None:  # never counted, or counted with its outcome
            return False
        keys = self._keys(charge)
        ts = int(charge["created_us"])

        def step(states: MutableMapping[Any, State], claimed: bool) -> bool:
            if claimed and write is not None:
                write(states, keys, charge, ts, cid)
            return claimed

        skeys = self._state_keys[AUTHORIZATION](keys) if write is not None else []
        applied = self.store.run(skeys, authorization_claim(cid), None, step)
        # The charge's outcome, for its outcomes' features filtered on it (a refund of it). Also when the
        # claim was taken already with the stored outcome still null: a retry after a failure between the
        # claim and this write (two writes on Redis) repairs it.
        result = {k: charge.get(k) for k in LATE_COLUMNS if k in self.label_fields}
        if result:
            self.store.set_charge_fields(cid, {**fields, **result})
        return applied

    def apply_outcome(
        self,
        source: str,
        outcome_id: str,
        charge_id: str,
        created_us: int,
        amount: int | None = None,
        currency: str | None = None,
    ) -> bool:
        """Count an outcome (``fraud_disputes``, ``efws`` or ``refunds``) of a known charge, at its own time.

        Its ``amount`` (minor units of ``currency``: a refund's or dispute's own) is what the aggregates of
        its ``amount_usd`` read, at its charge's rate
        (:func:`~payfm.features.definitions.outcome_amount_usd`); without one, its charge's amount.

        Returns False if it was already applied (by its claim,
        :func:`~payfm.features.definitions.outcome_claim`: its id, or for a fraud dispute its charge) or its
        charge was never seen (then it cannot be attributed to an entity).
        """
        write = self._write.get(source)
        fields = self.store.charge_fields(charge_id)
        if fields is None or write is None:
            return False
        keys = self._keys(fields)
        if amount is not None and self.outcome_amounts:
            fields = {**fields, "amount_usd": outcome_amount_usd(amount, currency, fields)}
        oid = str(outcome_id)  # with its time, orders an all-time `last` of its source (as the backfill does)

        def step(states: MutableMapping[Any, State], claimed: bool) -> bool:
            if claimed:
                write(states, keys, fields, created_us, oid)
            return claimed

        claim = outcome_claim(source, outcome_id, charge_id)  # a charge's fraud disputes count once
        applied = self.store.run(self._state_keys[source](keys), claim, None, step)
        self.store.advance(created_us)
        return applied
