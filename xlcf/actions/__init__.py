"""Use cases shared by every front end (CLI, Excel buttons, UDFs, server): fit a sheet (:mod:`.fit`, shape
recognition in :mod:`.blocks`), step a gradient-descent sheet (:mod:`.step`), train from a movielens book
(:mod:`.train_book`, settings in :mod:`.movielens_settings`, outputs in :mod:`.movielens_outputs`). Each reads and
writes the book through :mod:`.sheetio` (the zip ``Package`` here, xlwings in ``xlcf.excel``)."""
