"""Predictable scaling: fit small runs, predict the big one before training it (GPT-4 report).

laws.py        the functional forms: L(C)=a·C^b+c, Chinchilla L(N,D), −log pass_rate=α·C^−k
fit.py         fitting them, with convergence checks; compute-optimal allocation
bootstrap.py   case-bootstrap intervals for parameters and predictions
io.py          runs.csv in (errors name file and line), fit.json out (atomic)
plots.py       loss vs compute with band, capability, residuals
capability.py  the capability metric: fact-cloze pass rate with many samples per item
sweep.py       plan and run the family of pretraining runs under one recipe
predict.py     all fits of a sweep with intervals, predictions at a target, plots
stage.py       the commands ``alignlab scaling sweep | fit | predict`` (configs, presets)
"""
