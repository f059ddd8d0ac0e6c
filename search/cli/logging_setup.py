"""What a study's process sets before Ray is imported: Ray's token mode, and which
libraries' notes reach the terminal (`--quiet`: the study's own lines and errors only)."""

from __future__ import annotations

import logging
import os
import warnings


def before_ray(quiet: bool) -> None:
    """Set up `run` and `resume` before anything imports Ray."""
    # ray_session imports torch (seconds): only run and resume pay it.
    from search.study.interrupt import hide_tunes_resume_hint
    from search.study.ray_session import use_the_token_found_here

    use_the_token_found_here()  # before anything imports Ray
    hide_tunes_resume_hint()

    # torch.export explains its shape specialisation when the champion is logged: noise here.
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    logging.getLogger("torch.export").setLevel(logging.ERROR)
    if quiet:
        os.environ["RESNET_SEARCH_QUIET"] = "1"
    # A resumed trial reports its epochs again from its checkpoint: Optuna keeps the first
    # value of a step and warns of each repeat, which is expected here.
    warnings.filterwarnings("ignore", message="The reported value is ignored because this step",
                            category=UserWarning)
    if os.environ.get("RESNET_SEARCH_QUIET"):
        # Quiet means the study's own lines and errors: not MLflow's notes on the registration,
        # nor Ray's on its first token, nor Tune's on a stop (start_ray keeps Ray's INFO out).
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        for name in ("ray._private.authentication.authentication_token_setup", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
