"""nnU-Net experiment planners for this package's networks and a runner that drives nnU-Net's planning API."""

from nnunet_transfer.planning.res_unet_aspp_planner import ResUNetASPPPaperPlanner, ResUNetASPPPlanner
from nnunet_transfer.planning.run_planner import PLANNERS, plan_experiment, resolve_planner

__all__ = ["PLANNERS", "ResUNetASPPPaperPlanner", "ResUNetASPPPlanner", "plan_experiment", "resolve_planner"]
