"""One cell = (architecture, fold, seed) -> artefacts: metrics.json, history.csv, oof.npz, model.pt.

One job per module: ``data`` (the images on the device, the fold's split, the epoch's batches), ``optim``
(optimisers and schedules by name), ``trainer`` (model, optimiser, schedule, loss and the step), ``loop`` (the
epochs, resume, and ``train_cell``), ``prediction`` (the kept out-of-fold prediction, ``load_model``) and
``record`` (``metrics.json`` and the cell's files).
"""
