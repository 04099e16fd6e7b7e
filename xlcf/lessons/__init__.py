"""The lesson workbooks' generators: ``collab`` (dot product and bias sheets), ``graddesc`` (gradient descent on a
line, with its Python reference :mod:`.graddesc_ref`), ``movielens`` (layout and builder of the full-ratings book)
and :mod:`.xlsm` (the same books as macro workbooks with buttons)."""
