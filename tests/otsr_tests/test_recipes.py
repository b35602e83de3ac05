"""What a user who changes nothing gets: the recipe per pair kind, size and method; anything set wins."""

from otsr.pairs import make_pair
from otsr.recipes import recipe, recipe_table, resolve_config, resolve_members


def test_vector_recipes_by_method_and_dimension():
    small, large = make_pair("convex-mixture", dim=16), make_pair("convex-mixture", dim=64)
    ots16, ots64 = recipe(small, "ots"), recipe(large, "ots")
    assert (ots16["batch_size"], ots16["map_steps"], ots16["lr_critic"], ots16["steps"]) == (256, 3, 6e-4, 15000)
    assert (ots64["batch_size"], ots64["map_steps"], ots64["lr_critic"], ots64["steps"]) == (1024, 10, 3e-4, 9000)
    assert ots64["map_ema"] == 0.995 and "map_ema" not in ots16  # the weight average from D = 17 to 64 only
    ots128 = recipe(make_pair("convex-mixture", dim=128), "ots")  # the potential slower above D = 64
    assert (ots128["batch_size"], ots128["map_steps"], ots128["lr_critic"], ots128["steps"]) == (1024, 10, 1e-4, 10000)
    assert "map_ema" not in ots128 and "map_ema" not in recipe(large, "gan")
    gan16 = recipe(small, "gan")
    assert (gan16["batch_size"], gan16["lr_critic"], gan16["steps"]) == (1024, 1e-3, 2000)
    assert ots16["eval_every"] == ots16["steps"] // 10


def test_user_settings_win_and_large_images_keep_the_reference_defaults():
    pair = make_pair("convex-mixture", dim=16)
    assert resolve_config(pair, {"method": "ots", "batch_size": 64}).batch_size == 64
    img = make_pair("degraded-images", size=64, pool=16)
    assert recipe(img, "ots") == {} and resolve_config(img, {"method": "ots"}).batch_size == 64


def test_images_up_to_32_pixels_get_the_cpu_image_recipe():
    small = make_pair("degraded-images", size=16, pool=16)
    ots, gan = resolve_config(small, {"method": "ots"}), resolve_config(small, {"method": "gan"})
    assert (ots.width, ots.critic_width, ots.batch_size, ots.map_steps, ots.lr_critic) == (16, 16, 32, 3, 1e-3)
    assert (gan.critic_steps, gan.map_steps) == (3, 10)  # each method gets only its own settings
    assert resolve_config(small, {"method": "ots", "width": 32}).width == 32


def test_list_settings_zip_into_members():
    pair = make_pair("gaussian-shift", dim=4)
    members = resolve_members(pair, {"method": "gan", "lam": [0.1, 1.0], "seed": [3, 4], "gp": 5.0})
    assert [(m.lam, m.seed, m.gp) for m in members] == [(0.1, 3, 5.0), (1.0, 4, 5.0)]


def test_recipe_table_says_what_each_kind_gets():
    table = recipe_table()
    assert table["batch_size"]["SR pairs"] == "8"
    assert "256 / 1024 / 1024 by D = 16 / 64 / 128 (ots)" in table["batch_size"]["vector pairs"]
    assert "1024 (gan)" in table["batch_size"]["vector pairs"]
    assert table["map_ema"]["vector pairs"] == "0 (gan), 0 / 0.995 / 0 by D = 16 / 64 / 128 (ots)"
    assert "15000 / 9000 / 10000 by D = 16 / 64 / 128 (ots)" in table["steps"]["vector pairs"]
