"""Communication features of the provider's notifications (issue 13).

- :mod:`provider.comms.addresses`: one normalisation of phone numbers (E.164) and
  e-mail addresses, used for storing and for looking up opt-outs.
- :mod:`provider.comms.optouts`: the suppression list (add, remove, list, lookup) and
  the decision whether a delivery is suppressed (used by the delivery worker and the
  rules test ``opted_out``).
- :mod:`provider.comms.commands`: ``st-provider optout add|remove|list``.
"""
