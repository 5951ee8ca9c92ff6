"""The paper's published numbers (Tables 2-5 of Ahn, Kim and Oh, ICCV 2019), stored once, with
the layout of each table, so that ``den_tf.report`` can print our runs beside them.

A table has rows and columns as the paper prints them. ``layout='tasks'`` (Table 2): one
column per method, one row per task, then Average, FLOPs and No. parameters. ``layout=
'methods'`` (Tables 3-5): one row per method, columns Accuracy, FLOPs (or its compression
ratio), No. params. A method is (method id, rho, level): rho for DEN, level for NestedNet's
L/M/H rows; ``quoted`` rows are numbers the paper itself took from other papers (Routing,
Cross-stitch, N2N, Pruning), which this project does not run. Values are as printed: floats
for accuracies, strings for FLOPs and parameters (with the paper's units and bounds).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    """A column (layout 'tasks') or row (layout 'methods') of a published table."""

    label: str
    method: str  # methods.METHODS id, or '' for a quoted method
    rho: float | None = None
    level: int | None = None  # a NestedNet level (Table 5's L, M, H)
    selector: str = "learned"  # 'random' for Table 5's "rand sel"
    quoted: bool = False


@dataclasses.dataclass(frozen=True)
class Table:
    """One published table (or sub-table) and which runs it takes.

    Attributes:
      name: '2a', '2b', '3', '3s', '4a', '4b', '5-c10-vgg', ...
      title: the caption, shortened.
      scenario, backbone, tasks: what a run's results.json must say to belong here
        (backbone: a prefix of its name; tasks: its task names, in any order).
      layout: 'tasks' or 'methods' (module docstring).
      methods: the columns or rows, in the paper's order.
      rows: for layout 'tasks', (row label, task name or 'average' / 'flops' / 'params').
      values: per method label, per row key (layout 'tasks') or column ('accuracy', 'flops',
        'params'), the published value.
      flops: 'flops' (absolute), 'macs' (Table 3 counts multiply-adds) or 'ratio' (Table 5:
        compression against the baseline).
      accuracy_of: the task whose accuracy a 'methods' table reports ('': the average).
    """

    name: str
    title: str
    scenario: str
    backbone: str
    tasks: tuple[str, ...]
    layout: str
    methods: tuple[Method, ...]
    values: dict
    rows: tuple[tuple[str, str], ...] = ()
    flops: str = "flops"
    accuracy_of: str = ""


_M1_ROWS = (
    ("CIFAR-100 (32x32)", "cifar100"),
    ("Tiny-ImageNet (64x64)", "tiny_imagenet"),
    ("STL-10 (96x96)", "stl10"),
    ("Average", "average"),
    ("FLOPs", "flops"),
    ("No. parameters", "params"),
)
_M1_METHODS = (
    Method("Baseline", "baseline"),
    Method("NestedNet", "nestednet"),
    Method("PackNet*", "packnet"),
    Method("DEN (rho=1)", "den", 1.0),
    Method("DEN (rho=0.1)", "den", 0.1),
)


def _columns(methods, rows, *columns) -> dict:
    """{method label: {row key: value}} from one tuple of values per method (a column)."""
    keys = [key for _, key in rows]
    return {m.label: dict(zip(keys, column, strict=True))
            for m, column in zip(methods, columns, strict=True)}


def _rows(methods, *rows) -> dict:
    """{method label: {'accuracy', 'flops', 'params'}} from one tuple per method (a row)."""
    return {m.label: dict(zip(("accuracy", "flops", "params"), row, strict=True))
            for m, row in zip(methods, rows, strict=True)}


_M1_TASKS = ("cifar100", "tiny_imagenet", "stl10")
_M3 = ("cifar100_coarse", "cifar100")
_M3_METHODS = (Method("Baseline", "baseline"), Method("NestedNet", "nestednet"),
               Method("PackNet*", "packnet"), Method("DEN (rho=1)", "den", 1.0))
_M2_DEN = (Method("DEN (rho=1)", "den", 1.0), Method("DEN (rho=0.1)", "den", 0.1))
# At 84x84 the paper names DEN "DEN_s".
_M2_METHODS = (
    Method("Baseline", "baseline"),
    Method("Cross-stitch", "", quoted=True),
    Method("Routing", "", quoted=True),
    *(dataclasses.replace(m, label=m.label.replace("DEN", "DEN_s")) for m in _M2_DEN),
)


def _c1(name, backbone, dataset, methods, rows) -> Table:
    return Table(name, f"Table 5: network compression, {dataset.upper()}, {backbone}", "C1",
                 backbone, (dataset,), "methods", methods, _rows(methods, *rows),
                 flops="ratio")


_VGG = (Method("Baseline", "baseline"), Method("NestedNet, L", "nestednet", level=0),
        Method("NestedNet, H", "nestednet", level=1), Method("DEN (rho=0.1)", "den", 0.1))
_RESNEXT8 = (
    Method("Baseline", "baseline"),
    Method("NestedNet, L", "nestednet", level=1),
    Method("NestedNet, M", "nestednet", level=2),
    Method("NestedNet, H", "nestednet", level=3),
    Method("BlockDrop", "blockdrop"),
    # The random selector on the estimator of the rho = 0.1 run.
    Method("DEN + rand sel", "den", 0.1, selector="random"),
    Method("DEN (rho=1)", "den", 1.0),
    Method("DEN (rho=0.1)", "den", 0.1),
)
# The text compares DEN on ResNeXt-29 (4x64d) with N2N and Pruning (quoted from their papers).
# The table's "DEN (rho=1)" row printed beside them names no backbone and is left out.
_RESNEXT4 = (
    Method("Baseline", "baseline"),
    Method("NestedNet, L", "nestednet", level=1),
    Method("NestedNet, H", "nestednet", level=2),
    *(m for m in _RESNEXT8[4:]),
    Method("N2N (ResNet-18)", "", quoted=True),
    Method("N2N (ResNet-34)", "", quoted=True),
    Method("Pruning (ResNet-50)", "", quoted=True),
)

_RESNEXT2 = (Method("Baseline", "baseline"),)

TABLES: tuple[Table, ...] = (
    Table("2a", "Table 2(a): M1 on ResNet-42", "M1", "ResNet-42", _M1_TASKS, "tasks",
          _M1_METHODS, _columns(
              _M1_METHODS, _M1_ROWS,
              (75.05, 57.22, 76.25, 69.51, "2.91G", "89.4M [3]"),
              (74.53, 56.71, 82.54, 71.26, "1.70G", "29.8M [1]"),
              (72.22, 56.49, 80.78, 69.83, "1.70G", "29.8M [1]"),
              (74.30, 56.74, 83.90, 71.65, "1.35G", "29.8M [1]"),
              (75.11, 60.21, 87.58, 74.30, "1.61G", "29.8M [1]"),
          ), _M1_ROWS),
    Table("2b", "Table 2(b): M1 on WRN-32-4", "M1", "WRN-32-4", _M1_TASKS, "tasks",
          _M1_METHODS, _columns(
              _M1_METHODS, _M1_ROWS,
              (75.01, 58.89, 79.88, 71.26, "2.13G", "22.0M [3]"),
              (74.09, 57.87, 83.78, 71.91, "1.24G", "7.35M [1]"),
              (73.56, 57.17, 84.15, 71.63, "1.24G", "7.35M [1]"),
              (75.43, 58.17, 87.54, 73.71, "1.13G", "7.35M [1]"),
              (75.65, 58.25, 87.56, 73.82, "1.14G", "7.35M [1]"),
          ), _M1_ROWS),
    # The baseline and the quoted methods ran at 84x84 (27.4M multiply-adds, 0.14M
    # parameters: our SimpleConvNet at 84 has 27.44M and 0.137M); DEN at both sizes.
    Table("3s", "Table 3: M2 on Mini-ImageNet at 84x84 (DEN_s), average over the 10 tasks",
          "M2", "SimpleConvNet", tuple(f"mini_imagenet84_task{k}" for k in range(10)),
          "methods", _M2_METHODS, _rows(
              _M2_METHODS, (51.03, "27.4M", "0.14M"), (56.03, "> 27.4M", "> 0.14M"),
              (58.97, "27.4M", "> 0.14M"), (60.78, "18.7M", "0.14M"),
              (62.62, "19.4M", "0.14M")), flops="macs"),
    Table("3", "Table 3: M2 on Mini-ImageNet at 224x224 (DEN), average over the 10 tasks",
          "M2", "SimpleConvNet", tuple(f"mini_imagenet224_task{k}" for k in range(10)),
          "methods", _M2_DEN, _rows(
              _M2_DEN, (63.20, "33.3M", "0.85M"), (65.23, "39.1M", "0.85M")),
          flops="macs"),
    Table("4a", "Table 4(a): M3 coarse classification (20 classes)", "M3", "WRN-32-4", _M3,
          "methods", _M3_METHODS, _rows(
              _M3_METHODS, (83.53, "2.91G", "14.7M"), (84.55, "1.46G", "7.35M"),
              (84.53, "1.46G", "7.35M"), (84.87, "1.37G", "7.35M")),
          accuracy_of="cifar100_coarse"),
    Table("4b", "Table 4(b): M3 fine classification (100 classes)", "M3", "WRN-32-4", _M3,
          "methods", _M3_METHODS, _rows(
              _M3_METHODS, (76.32, "2.91G", "14.7M"), (75.84, "2.91G", "7.35M"),
              (75.65, "2.91G", "7.35M"), (75.93, "1.37G", "7.35M")),
          accuracy_of="cifar100"),
    _c1("5-cifar10-vgg", "VGG-16", "cifar10", _VGG, (
        (92.52, "1.0x", "38.9M"), (91.29, "2.0x", "19.4M"), (92.40, "1.0x", "38.9M"),
        (92.31, "2.4x", "18.5M"))),
    _c1("5-cifar100-vgg", "VGG-16", "cifar100", _VGG, (
        (69.64, "1.0x", "38.9M"), (68.10, "2.0x", "19.4M"), (69.01, "1.0x", "38.9M"),
        (68.87, "1.7x", "18.9M"))),
    _c1("5-cifar10-resnext8", "ResNeXt-29 (8x64d)", "cifar10", _RESNEXT8, (
        (94.61, "1.0x", "22.4M"), (93.56, "4.0x", "5.6M"), (93.64, "2.0x", "11.2M"),
        (94.13, "1.0x", "22.4M"), (93.56, "1.2x", "16.9M"), (90.55, "2.3x", "9.8M"),
        (91.45, "5.5x", "4.1M"), (94.61, "2.7x", "8.7M"))),
    _c1("5-cifar100-resnext8", "ResNeXt-29 (8x64d)", "cifar100", _RESNEXT8, (
        (78.73, "1.0x", "22.4M"), (74.83, "4.0x", "5.6M"), (74.98, "2.0x", "11.2M"),
        (76.16, "1.0x", "22.4M"), (78.35, "1.4x", "15.5M"), (69.67, "2.3x", "9.8M"),
        (78.27, "3.0x", "7.3M"), (78.68, "1.9x", "13.5M"))),
    _c1("5-cifar10-resnext4", "ResNeXt-29 (4x64d)", "cifar10", _RESNEXT4, (
        (94.37, "1.0x", "11.2M"), (93.59, "2.0x", "5.6M"), (94.11, "1.0x", "11.2M"),
        (93.07, "1.7x", "6.53M"), (87.33, "2.0x", "5.6M"), (93.38, "2.1x", "5.4M"),
        (94.47, "1.9x", "5.8M"), (91.97, "", "2.12M"), (93.54, "", "3.87M"),
        (94.15, "", "6.44M"))),
    _c1("5-cifar100-resnext4", "ResNeXt-29 (4x64d)", "cifar100", _RESNEXT4, (
        (77.95, "1.0x", "11.2M"), (75.70, "2.0x", "5.6M"), (76.36, "1.0x", "11.2M"),
        (77.23, "1.5x", "7.47M"), (65.44, "2.0x", "5.6M"), (76.71, "2.0x", "5.6M"),
        (77.58, "1.8x", "6.3M"), (69.64, "", "4.76M"), (70.11, "", "4.25M"),
        (74.10, "", "9.24M"))),
    # The table ends with the baseline of ResNeXt-29 (2x64d), the 4x64d DEN's size.
    _c1("5-cifar10-resnext2", "ResNeXt-29 (2x64d)", "cifar10", _RESNEXT2, (
        (93.60, "-", "5.6M"),)),
    _c1("5-cifar100-resnext2", "ResNeXt-29 (2x64d)", "cifar100", _RESNEXT2, (
        (76.54, "-", "5.6M"),)),
)
