"""Maintenance tools for the book and its package, run from the repository root.

They are not part of the installed ``unet_edu`` package: learners never need them.

* ``python -m tools.book execute|check`` — execute the chapters in place; check them for publishing;
* ``python -m tools.train_pretrained NAME`` — re-train a model shipped in ``unet_edu/pretrained``;
* ``python -m tools.train_experiments NAME`` — train the shipped runs behind a chapter's experiment;
* ``python -m tools.sampler_sweep`` — DDIM step counts against sample quality (stored with the model);
* ``python -m tools.bench`` — the speed comparison of the appendix "How fast is it?";
* ``python -m tools.vendor_js`` — copy the website's browser libraries from pinned npm packages.
"""
