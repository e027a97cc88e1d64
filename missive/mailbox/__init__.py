"""The ledger and the mailboxes: envelopes, admission of external messages, the LMDB store.

A message enters here (``admission`` checks it, ``store.accept`` makes it
durable), waits in its recipient's queue, and comes back here after its
handler ran (``store.commit`` writes receipt, state diff and sent messages in
one transaction).
"""
