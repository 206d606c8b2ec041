"""Studies: grids of runs over seeds with their claims, gates and verdicts, and the
pipelines of several stages the studies run.

    study.py        StudyConfig, Cell, Selection, Figure; the runner (plan, jobs, records)
    jobs.py         the process scheduler (--jobs)
    records.py      a cell's record: key, figures, commit, machine
    report.py       intervals over seeds, figures, the claim table, report.md
    claims.py       claims, validity gates and the verdict rule
    provenance.py   the grid's and claims' digests, --amend, discarded records
    iterated.py     iterated online RLHF (Bai et al. 2022)
    process_supervision.py  process vs outcome supervision (Lightman et al. 2023)
    process_samples.py      its generator's labelled samples, label sets and verifier scores
    twins.py        a run's stages started from a finished sibling's of the same training
    weak_to_strong.py       weak-to-strong generalisation (Burns et al. 2023)
"""
