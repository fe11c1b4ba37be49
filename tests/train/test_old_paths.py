"""The modules that moved keep their old import paths as thin re-exports for one release."""


def test_old_import_paths_still_resolve():
    import evaluation
    import spectral_inst
    from train import evaluate as old_evaluate
    from train import spectral_inst as old_spectral_inst

    assert old_spectral_inst.build_dataset is spectral_inst.build_dataset
    assert old_spectral_inst.format_labels is spectral_inst.format_labels
    assert old_spectral_inst.resolve_image_path is spectral_inst.resolve_image_path
    assert old_evaluate.run_linear_probe is evaluation.run_linear_probe
    assert old_evaluate.list_eurosat is evaluation.eurosat_samples
    assert old_evaluate.load_model.__module__ == "modeling_spectral_llava.loading"
