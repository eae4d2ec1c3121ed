"""Communication features of the provider's notifications (issue 13).

- :mod:`provider.comms.templates`, ``checks``, ``rows``, ``render``: message templates and
  global variables (the rules file's ``templates:`` and ``variables:``), shared by rules and
  channels; :mod:`provider.comms.template_commands`: ``st-provider templates list|show|render``.
- :mod:`provider.comms.addresses`: one normalisation of phone numbers (E.164) and
  e-mail addresses, used for storing and for looking up opt-outs.
- :mod:`provider.comms.optouts`: the suppression list (add, remove, list, lookup) and
  the decision whether a delivery is suppressed (used by the delivery worker and the
  rules test ``opted_out``); :mod:`provider.comms.optout_commands`: ``st-provider optout add|remove|list``.
"""
