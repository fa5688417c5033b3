from unet_edu.exercises import chapter1 as c1
from unet_edu.exercises import chapter2 as c2


def test_chapter1_checkers(capsys):
    assert c1.naive_receptive_field(5) == 11
    assert c1.check_receptive_field(5, 11) and not c1.check_receptive_field(5, 15)
    assert c1.check_dense_decisions(224, 224, 50176) and not c1.check_dense_decisions(224, 224, 224)
    assert c1.check_naive_parameters(64, 5, 112001)
    assert c1.check_layers_needed(28, 14) and not c1.check_layers_needed(28, 13)
    out = capsys.readouterr().out
    assert "Correct" in out and "Not yet" in out


def test_chapter2_checkers(capsys):
    assert c2.check_output_size(572, 388) and not c2.check_output_size(572, 572)
    assert c2.check_output_size(570, None)
    assert c2.check_concat_channels((64, 128, 256, 512, 1024), 0, 128)
    assert c2.check_concat_channels((64, 128, 256, 512, 1024), 3, 1024)
    assert c2.check_parameter_count((64, 128, 256, 512, 1024), "concat", 31_030_658)
    assert c2.check_valid_input(570, 572) and c2.check_valid_input(572, 572)
    assert "Correct" in capsys.readouterr().out
