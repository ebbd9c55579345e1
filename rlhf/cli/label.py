"""``rlhf label <command>``: a labeling project for people, from candidates to rankings.

    rlhf label generate ...            K responses per prompt to rank (rlhf.feedback.candidates)
    rlhf label init --candidates F     create the project (SQLite by default, or PostgreSQL)
    rlhf label add-labeler NAME        a labeler's private link
    rlhf label admin-token             the admin's link
    rlhf serve --db URL                the web app (a stage of its own)
    rlhf label export --output_file F  rankings with labeler and weight, for `rlhf rm`
    rlhf label simulate --url U        the embedded task's simulated labelers, through the app

docs/labeling.md walks through them.
"""

COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("rlhf.feedback.candidates", "Sample K responses per prompt over several temperatures, for labeling."),
    "init": ("rlhf.cli.labeling.create", "Create a labeling project from a candidates file."),
    "add-labeler": ("rlhf.cli.labeling.add_labeler", "Add a labeler and print their private link."),
    "admin-token": ("rlhf.cli.labeling.admin_token", "Make a new admin token and print the admin's link."),
    "export": ("rlhf.cli.labeling.export", "Write the labels as rankings with labeler and weight, for rlhf rm."),
    "simulate": ("rlhf.cli.labeling.simulate", "Play the embedded simulated labelers through a running app."),
}
