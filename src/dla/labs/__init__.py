"""`dla lab N`: a whole lab, as data (labN.yaml), run in order on a budget profile, into one HTML report."""

from dla.labs.plan import LabPlan, Step, lab_numbers, load_plan
from dla.labs.run import run_lab

__all__ = ["LabPlan", "Step", "lab_numbers", "load_plan", "run_lab"]
