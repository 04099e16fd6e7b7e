"""The ``movielens`` workbook: :mod:`.layout` (where every setting, metric and table sits) and :mod:`.build`
(the openpyxl generator of a new book). Training from a book and writing into it are actions
(:mod:`xlcf.actions.train_book`)."""
