import torch

from napari_pix2pix.models import (
    ContractingBlock,
    Discriminator,
    ExpandingBlock,
    FeatureMapBlock,
    Generator,
    ModelConfig,
    UNet,
    build_model,
    crop,
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
