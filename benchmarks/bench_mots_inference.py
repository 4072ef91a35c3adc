"""All-task MOTS inference in one pass vs seven per-task conditioned passes over the same volume, in one run.

The network is the MOTS pretraining network exactly as ``MOTSPretrainTrainer`` builds it for prediction (deep
supervision off) from nnU-Net's own 3d_fullres plans of a synthetic MOTS dataset (``synth mots`` ->
``convert mots`` -> ``nnUNetv2_plan_and_preprocess``, the data preparation of :mod:`bench_train_step`). One input
of the plans' patch size (one sliding-window tile, batch 1 as nnU-Net's predictor uses) is evaluated

* once with all seven task heads (``DynamicHeadNetwork.forward_all_tasks``: one backbone pass, the controller
  and the dynamic head for the seven task codes), and
* seven times, each conditioned on one task (``conditioned_on``: DoDNet's own inference runs one pass per task),

alternating between the two so machine load hits both alike; the outputs are asserted equal channel by channel.
The figure is the ratio of median times (seven passes / one pass); the goal is at least 5x.

    python benchmarks/bench_mots_inference.py --quick               # synthetic volumes 32x96x96
    python benchmarks/bench_mots_inference.py --shape 64 160 160    # larger plans patch
    python benchmarks/bench_mots_inference.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import Bench, _sync  # noqa: E402  (benchmarks/ is not a package)


def mots_network_from_plans(bench: Bench, device):
    """The prediction network ``MOTSPretrainTrainer`` builds from the dataset's nnU-Net plans, and its patch."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_transfer.trainers import MOTSPretrainTrainer

    folder = bench.ws.preprocessed / bench.dataset("mots")
    plans = PlansManager(json.loads((folder / "nnUNetPlans.json").read_text()))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    configuration = plans.get_configuration("3d_fullres")
    label_manager = plans.get_label_manager(dataset_json)
    network = MOTSPretrainTrainer.build_network_architecture(
        plans, configuration, determine_num_input_channels(plans, configuration, dataset_json),
        label_manager.num_segmentation_heads, enable_deep_supervision=False)
    return network.to(device).eval(), configuration


def main(argv=None) -> int:
    import torch

    from nnunet_transfer.data import mots_tasks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="synthetic volumes 32x96x96, 3 repeats")
    parser.add_argument("--shape", type=int, nargs=3, default=None,
                        help="synthetic volume shape z y x (default 48x128x128); nnU-Net plans the patch from it")
    parser.add_argument("--repeats", type=int, default=None, help="alternating repetitions (default 5, quick 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--workspace", default=None, help="reuse a workspace (keeps the planned dataset)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = args.shape or ([32, 96, 96] if args.quick else [48, 128, 128])
    repeats = args.repeats or (3 if args.quick else 5)
    bench = Bench(Path(args.workspace or tempfile.mkdtemp(prefix="bench_mots_inf_")), shape, args.device, repeats)
    device = torch.device(args.device)
    network, configuration = mots_network_from_plans(bench, device)
    patch = list(configuration.patch_size)
    arch = configuration.network_arch_init_kwargs
    params = sum(p.numel() for p in network.parameters()) / 1e6
    x = torch.randn(1, 1, *patch, device=device)
    tasks = range(mots_tasks.NUM_TASKS)

    def one_pass():
        return network.forward_all_tasks(x)

    def seven_passes():
        outs = []
        for task in tasks:
            with network.conditioned_on(torch.tensor([task], device=device)):
                outs.append(network(x))
        return outs

    with torch.inference_mode():
        merged = network._to_output_channels(one_pass())
        for task, alone in zip(tasks, seven_passes()):
            own = [ch.index for ch in mots_tasks.OUTPUT_CHANNELS if ch.task == task]
            torch.testing.assert_close(alone[:, own], merged[:, own], rtol=1e-4, atol=1e-4)
        t_one, t_seven = [], []
        for _ in range(repeats):
            for fn, times in ((one_pass, t_one), (seven_passes, t_seven)):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - t0)
    one, seven = statistics.median(t_one), statistics.median(t_seven)
    print(f"MOTS network from nnU-Net's plans: {type(network).__name__} on "
          f"{configuration.network_arch_class_name.rsplit('.', 1)[-1]}, {arch['n_stages']} stages, features "
          f"{list(arch['features_per_stage'])}, {params:.1f} M parameters; input 1x1x{'x'.join(map(str, patch))} "
          f"(one tile), device {args.device}, torch threads {torch.get_num_threads()}, median of {repeats} "
          f"alternating repeats; outputs equal")
    print(f"{'inference':<38}{'time [ms]':>12}")
    print(f"{'all seven tasks, one pass':<38}{one * 1e3:>12.1f}")
    print(f"{'seven task-conditioned passes':<38}{seven * 1e3:>12.1f}")
    print(f"speed-up of the one-pass inference: {seven / one:.2f}x (goal >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
