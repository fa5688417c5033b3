from unet_edu.exercises import chapter1 as c1
from unet_edu.exercises import chapter2 as c2


def test_chapter1_checkers(grade):
    assert c1.naive_receptive_field(5) == 11
    assert grade(c1.check_receptive_field, 5, 11) and not grade(c1.check_receptive_field, 5, 15)
    assert grade(c1.check_dense_decisions, 224, 224, 50176) and not grade(c1.check_dense_decisions, 224, 224, 224)
    assert grade(c1.check_naive_parameters, 64, 5, 112001)
    assert grade(c1.check_layers_needed, 28, 14) and not grade(c1.check_layers_needed, 28, 13)


def test_chapter2_checkers(grade):
    assert grade(c2.check_output_size, 572, 388) and not grade(c2.check_output_size, 572, 572)
    assert grade(c2.check_output_size, 570, None)
    assert grade(c2.check_concat_channels, (64, 128, 256, 512, 1024), 0, 128)
    assert grade(c2.check_concat_channels, (64, 128, 256, 512, 1024), 3, 1024)
    assert grade(c2.check_parameter_count, (64, 128, 256, 512, 1024), "concat", 31_030_658)
    assert grade(c2.check_valid_input, 570, 572) and grade(c2.check_valid_input, 572, 572)
