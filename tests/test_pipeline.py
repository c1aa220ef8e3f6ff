"""FeatureExtractor: (floor(frames / 16), 2048) features, RGB first, deterministic; bad videos."""
import numpy as np
import pytest

from feature_extraction.flow import TorchTVL1
from feature_extraction.pipeline import FeatureExtractor
from feature_extraction.synthetic import moving_texture, random_i3d_weights, write_video
from utils.errors import STCLError, VideoError


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return (random_i3d_weights(folder / "rgb_imagenet.pt", 3, seed=1),
            random_i3d_weights(folder / "flow_imagenet.pt", 2, seed=2))


@pytest.fixture(scope="module")
def extractor(weights):
    return FeatureExtractor(*weights, flow="opencv", size=16, batch_size=2)


@pytest.mark.parametrize("frames", [37, 48])
def test_features_have_one_row_per_complete_16_frame_chunk(tmp_path, extractor, frames):
    video = write_video(tmp_path / "v.mp4", moving_texture(frames, 32, 32), fps=25)
    features = extractor.extract(video)
    assert features.shape == (frames // 16, 2048) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert np.array_equal(features, extractor.extract(video))  # deterministic


def test_rgb_stream_comes_first(tmp_path, weights, extractor):
    """A static video has zero flow, so only the RGB half changes with the image."""
    still = np.repeat(moving_texture(1, 32, 32, seed=3), 16, axis=0)
    other = np.repeat(moving_texture(1, 32, 32, seed=4), 16, axis=0)
    a = extractor.extract(write_video(tmp_path / "a.mp4", still, fps=25))
    b = extractor.extract(write_video(tmp_path / "b.mp4", other, fps=25))
    assert not np.allclose(a[:, :1024], b[:, :1024])
    np.testing.assert_allclose(a[:, 1024:], b[:, 1024:], rtol=1e-5, atol=1e-6)


def test_batch_size_does_not_change_the_features(tmp_path, weights, extractor):
    video = write_video(tmp_path / "v.mp4", moving_texture(33, 32, 32), fps=25)
    one = FeatureExtractor(*weights, flow="opencv", size=16, batch_size=1).extract(video)
    np.testing.assert_allclose(one, extractor.extract(video), rtol=1e-4, atol=1e-5)


def test_a_video_shorter_than_one_snippet_is_an_error_naming_it(tmp_path, extractor):
    video = write_video(tmp_path / "short.mp4", moving_texture(15, 32, 32), fps=25)
    with pytest.raises(VideoError, match=r"short.mp4: 15 frames at 25 fps \(0.60 s\) is shorter than one snippet"):
        extractor.extract(video)


def test_wrong_weights_are_an_stcl_error(tmp_path, weights):
    with pytest.raises(STCLError, match="flow_imagenet.pt.*wrong shapes"):
        FeatureExtractor(weights[1], weights[1], size=16)


def test_flow_sample_mode_and_quantize_options_reach_the_features(tmp_path, weights, extractor):
    video = write_video(tmp_path / "v.mp4", moving_texture(17, 32, 32, velocity=(1, 0)), fps=25)
    base = extractor.extract(video)
    with_torch = FeatureExtractor(*weights, flow="torch", size=16)
    assert isinstance(with_torch.flow, TorchTVL1)
    torch_features = with_torch.extract(video)
    np.testing.assert_array_equal(torch_features[:, :1024], base[:, :1024])
    relative = np.linalg.norm(torch_features[:, 1024:] - base[:, 1024:]) / np.linalg.norm(base[:, 1024:])
    assert 0 < relative < 0.05
    quantized = FeatureExtractor(*weights, flow="opencv", size=16, flow_quantize="uint8").extract(video)
    np.testing.assert_array_equal(quantized[:, :1024], base[:, :1024])
    assert not np.array_equal(quantized[:, 1024:], base[:, 1024:])
    oversampled = FeatureExtractor(*weights, flow="opencv", size=16, short_side=20, sample_mode="oversample")
    assert oversampled.sampler.num_views == 10
    assert not np.allclose(oversampled.extract(video), base)
