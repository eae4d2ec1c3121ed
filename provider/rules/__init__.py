"""Rules: every provider decision, configured in the database.

Rules files (YAML) are validated by :mod:`provider.rules.loader`, stored by
:mod:`provider.rules.store`, compiled and evaluated by :mod:`provider.rules.engine`
over the call context of :mod:`provider.rules.context`, in the sandbox of
:mod:`provider.rules.environment` (its filters and method calls in
:mod:`provider.rules.checked`), every evaluation bounded by :mod:`provider.rules.limits`. A serving process uses
:func:`provider.rules.evaluator.build_evaluator`.

The package imports nothing itself, so importing one of its modules never drags in
the store and the evaluator (which import :mod:`provider.comms` in turn).
"""

from __future__ import annotations
