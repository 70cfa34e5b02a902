"""The model summary at the start of training: Lightning's rich table, said for a fine-tuning run.

Lightning's table has a FLOPs column that reads 0 for every model here (it counts FLOPs only for a
module with an ``example_input_array``), and its trainer warns "Found N module(s) in eval mode ...
unexpected behavior" whenever blocks are frozen, which in this framework is the point: the
fine-tuning callback puts frozen blocks in eval mode so their BatchNorm statistics and dropout stay
fixed. :class:`FinetuneModelSummary` prints the table without the empty column and says what the
eval-mode modules are; :func:`experiments.reporting.console.quiet_lightning` drops the warning.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from experiments.config.declared import Integer


class FinetuneModelSummary(RichModelSummary):
    """:class:`~lightning.pytorch.callbacks.RichModelSummary` with trainable and frozen parameters
    and the modules in eval mode explained; FLOPs only when they were counted.

    Args:
        max_depth: the depth of nested modules shown (-1: all, 0: none).
    """

    KEYS = {"max_depth": Integer(low=-1)}

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        shown = [name for name in ("Name", "Type", "Params", "Params per Device", "Mode", "FLOPs", "In sizes", "Out sizes")
                 if name in columns and (name != "FLOPs" or total_flops)]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        table.add_column(" ", style="dim")
        for name in shown:
            table.add_column(name, justify="left" if name in ("Name", "Type", "Mode") else "right", no_wrap=name == "Name")
        for row, index in enumerate(columns.get(" ", [])):
            table.add_row(index, *(columns[name][row] for name in shown))
        frozen = total_parameters - trainable_parameters
        lines = [
            f"trainable params {get_human_readable_count(int(trainable_parameters))}, frozen "
            f"{get_human_readable_count(int(frozen))}, total {get_human_readable_count(int(total_parameters))} "
            f"({get_formatted_model_size(model_size)} MB)",
        ]
        if total_training_modes.get("eval"):
            lines.append(f"{total_training_modes['eval']} modules in eval mode (frozen blocks: BatchNorm and dropout stay fixed)")
        if total_flops:
            lines.append(f"FLOPs {get_human_readable_count(int(total_flops))}")
        console = get_console()
        console.print(table)
        for line in lines:
            console.print(line, highlight=False)
