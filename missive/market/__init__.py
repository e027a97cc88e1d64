"""The execution market (SPEC §7, docs/market.md): fees paid by bid, escrowed at admission and
settled with each receipt (:mod:`missive.market.fees`)."""
