"""What every task shares that is not an engine: the opening and the files of ``spft evaluate``
(:mod:`.evaluation`), the prediction table and its batch loop (:mod:`.prediction`), export folders and model cards
(:mod:`.export_folder`), their validation before anything is built (:mod:`.export_check`), and smoke-run limits
(:mod:`.limits`). Task packages import from here, never from one another.
"""
