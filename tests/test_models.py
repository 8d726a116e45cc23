import numpy as np
import pytest
import torch

from napari_pix2pix.errors import InputError
from napari_pix2pix.models import (
    ARCHITECTURES,
    Architecture,
    ContractingBlock,
    Discriminator,
    ExpandingBlock,
    FeatureMapBlock,
    Generator,
    ModelConfig,
    SameSize,
    UNet,
    build_model,
    crop,
    register_architecture,
)


def test_seed_unet_maps_512_to_373_and_256_to_117():
    network = UNet(1, 2, hidden_channels=2, depth=4, padded=False).eval()
    with torch.no_grad():
        assert network(torch.zeros(1, 1, 512, 512)).shape == (1, 2, 373, 373)
        assert network(torch.zeros(1, 1, 256, 256)).shape == (1, 2, 117, 117)
    assert network.output_size(512) == 373
    assert network.output_size(256) == 117
    assert network.output_size(100) == 0
    assert network.output_size(network.min_input_size()) >= 1


def test_seed_unet_is_built_from_the_origin_blocks():
    network = build_model(ModelConfig("seed-unet", width=8))
    assert isinstance(network.upfeature, FeatureMapBlock)
    assert [type(b) for b in network.contract] == [ContractingBlock] * 4
    assert [type(b) for b in network.expand] == [ExpandingBlock] * 4
    assert network.contract[0].convs[0].padding == (0, 0)  # valid convolutions
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())


def test_padded_unet_keeps_the_image_size():
    network = UNet(3, 4, hidden_channels=4, depth=3).eval()
    with torch.no_grad():
        assert network(torch.zeros(2, 3, 48, 80)).shape == (2, 4, 48, 80)
    assert network.size_multiple == 8


def test_generator_has_dropout_and_discriminator_judges_patches():
    generator = Generator(1, 2, hidden_channels=4, depth=4)
    assert any(isinstance(m, torch.nn.Dropout2d) for m in generator.modules())
    discriminator = Discriminator(in_channels=3, hidden_channels=4)
    logits = discriminator(torch.zeros(2, 1, 128, 128), torch.zeros(2, 2, 128, 128))
    assert logits.shape[:2] == (2, 1) and logits.shape[2] > 1  # one logit per patch


def test_crop_takes_the_centre():
    image = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert crop(image, (1, 1, 2, 2)).flatten().tolist() == [14.0, 15.0, 20.0, 21.0]


class TinyNetwork(SameSize, torch.nn.Module):
    """A toy same-size network: two 3×3 convolutions. Registering it is all it takes to offer it."""

    def __init__(self, in_channels, out_channels, width):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(width, out_channels, 3, padding=1),
        )

    def forward(self, x):
        return self.layers(x)


@pytest.fixture
def toy_architecture():
    architecture = register_architecture(
        Architecture(
            "toy",
            "Toy network (two convolutions)",
            lambda c: TinyNetwork(c.in_channels, c.out_channels, c.width),
            patch_size=48,
            learning_rate=1e-2,
        )
    )
    yield architecture
    del ARCHITECTURES["toy"]


def test_a_network_is_added_by_one_registry_entry(toy_architecture, membranes, tmp_path, capsys):
    from conftest import tiny_config

    from napari_pix2pix.cli import main
    from napari_pix2pix.io import load_model, save_model
    from napari_pix2pix.prediction import predict
    from napari_pix2pix.training import fit

    config = tiny_config(model="toy", patch_size=None, learning_rate=None, width=8, epochs=10, steps_per_epoch=10)
    assert (config.patch, config.lr) == (48, 1e-2)  # the entry's defaults
    model = fit(*membranes, config)
    image, truth = membranes
    predicted = predict(model, image, device="cpu")
    assert (predicted == truth).mean() > 0.8  # it learned
    loaded = load_model(save_model(model, tmp_path / "toy.pt"))
    assert isinstance(loaded.network, TinyNetwork)
    np.testing.assert_array_equal(predict(loaded, image, device="cpu"), predicted)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "toy" in capsys.readouterr().out  # offered on the command line


def test_unknown_architecture_names_the_choices():
    with pytest.raises(InputError, match="model must be one of .*unet"):
        ModelConfig("resnet")
