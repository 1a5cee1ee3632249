"""A live training curve in Slicer: table node, plot series and chart, fed by events.

Rows are appended as ``metric`` events arrive, so a curve with thousands of points is
never rebuilt; a panel re-attaching to a run replays ``events.jsonl`` through the same
path and gets the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import vtk

from ipv2.runtime.jobs import Event
from ipv2.slicer.nodes import scene_or_default

# Table columns: the step, then one column per metric the curve shows.
COLUMNS = ("step", "loss", "val_mae_hu", "val_psnr", "val_ssim")
PLOTTED = {"loss": (0.85, 0.3, 0.2), "val_mae_hu": (0.2, 0.45, 0.85)}


class TrainingCurve:
    """Owns a table node and a chart; ``add(events)`` appends what they measured."""

    def __init__(self, name: str = "IPv2 training", scene: Any | None = None) -> None:
        self.scene = scene_or_default(scene)
        self.table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} curve")
        for column in COLUMNS:
            array = vtk.vtkDoubleArray()
            array.SetName(column)
            self.table.AddColumn(array)
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
        self.chart.SetTitle(name)
        self.chart.SetXAxisTitle("step")
        self.chart.SetYAxisTitle("loss / validation MAE (HU)")
        self.chart.SetYAxisLogScale(True)
        self.series = {}
        for column, colour in PLOTTED.items():
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName("step")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetColor(*colour)
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
            self.series[column] = series
        self._row_of_step: dict[int, int] = {}

    def add(self, events: Iterable[Event]) -> int:
        """Append the metrics in ``events``; returns the number of rows added."""
        table = self.table.GetTable()
        added = 0
        modified = False
        for event in events:
            if event.get("event") != "metric" or "step" not in event:
                continue
            column = str(event.get("name"))
            if column not in COLUMNS:
                continue
            step = int(event["step"])
            row = self._row_of_step.get(step)
            if row is None:
                row = table.GetNumberOfRows()
                table.InsertNextBlankRow(math.nan)
                table.SetValueByName(row, "step", step)
                self._row_of_step[step] = row
                added += 1
            table.SetValueByName(row, column, float(event["value"]))
            modified = True
        if modified:
            table.Modified()
            self.table.Modified()
        return added

    def rows(self) -> list[dict[str, float]]:
        """The table as plain rows (for tests and exports)."""
        table = self.table.GetTable()
        out = []
        for r in range(table.GetNumberOfRows()):
            out.append({c: table.GetValueByName(r, c).ToDouble() for c in COLUMNS})
        return out
