"""``alignlab label``: a local web page where a person ranks K responses per prompt, for the reward model.

InstructGPT's comparisons came from people ranking 4 to 9 model outputs per prompt (ties allowed) and
marking each with metadata (fails the instruction, hallucination, harmful, inappropriate). This package
serves that task on the user's own machine and writes what the reward stage reads:

    config.py      the stage's keys (what to rank, where it goes, host and port; ``stats`` switches mode)
    items.py       the prompts and their K responses: from a ranked file, or sampled from policies
    sampling.py    K samples per prompt from one or more policies (the compare stage's way, rollout/k_samples.py)
    submission.py  the order the page shows a labeler, and one submission checked and turned into a line
    store.py       the rankings file: appended to and fsynced per submission; what each labeler has done
    page.py        the one HTML page (inline CSS and JS; model text only ever set as text)
    server.py      the HTTP server (standard library) and its three routes
    stats.py       each labeler's count and the agreement between labelers (``--stats FILE``)
    stage.py       ``run``: serve, or report on a file
"""
