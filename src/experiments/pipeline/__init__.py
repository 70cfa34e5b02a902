"""The run layer: the job wrapper (``job``: record, signals, exit codes, publish), the modes
(``tasks``), finetune=auto's resolution (``auto``), the builders (``build``), step budgets
(``budget``) and the one fit (``fit``). Light at import: Hydra's callbacks (``rundirs``) load at
start-up."""
