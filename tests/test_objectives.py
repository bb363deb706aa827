"""The adversarial objectives do what they claim, on the real digits data."""

import torch

from datamodules import Digits
from lightning_modules import RobustANN
from srsnn.ann.architectures import SmallCNN
from srsnn.robustness.attacks import make_attack


def _train(objective: str, epochs: int = 4) -> float:
    torch.manual_seed(0)
    dm = Digits(batch_size=64)
    dm.setup("fit")
    module = RobustANN(
        SmallCNN(input_size=8, width=8, mean=[0.2], std=[0.3]), objective=objective, epsilon=0.15, attack_steps=3
    )
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for x, y in dm.train_dataloader():
            module.train()
            loss, _ = module.training_loss(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    module.eval()
    x, y = next(iter(dm.test_dataloader()))
    x_adv = make_attack("pgd", module.net, 0.15, steps=10)(x, y)
    with torch.no_grad():
        return (module.net(x_adv).argmax(1) == y).float().mean().item()


def test_pgd_at_is_more_robust_than_standard_training():
    robust_std = _train("standard")
    robust_at = _train("pgd_at")
    assert robust_at > robust_std + 0.15, (robust_std, robust_at)


def test_trades_loss_is_ce_plus_beta_kl_and_attacks_stay_in_the_ball():
    torch.manual_seed(0)
    module = RobustANN(SmallCNN(input_size=8, width=4), objective="trades", beta=0.0, epsilon=0.1, attack_steps=2)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss, logits = module.training_loss(x, y)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, y))
    for name in ("fgsm", "pgd", "tpgd", "rfgsm_kl"):
        adv = make_attack(name, module.net, 0.1, steps=3)(x, y)
        assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_mart_loss_matches_its_equation_on_a_hand_case():
    """z = (2, 0, 0), z~ = (0, 1, 0), y = 0: CE(z~, 0) - log(1 - p~_1) + beta KL(p || p~) (1 - p_0)."""
    import math

    from srsnn.robustness.objectives import mart_loss

    z, z_adv, y = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0])
    p = [math.exp(2) / (math.exp(2) + 2), 1 / (math.exp(2) + 2), 1 / (math.exp(2) + 2)]
    q = [1 / (math.e + 2), math.e / (math.e + 2), 1 / (math.e + 2)]
    kl = sum(a * math.log(a / b) for a, b in zip(p, q))
    expected = -math.log(q[0]) - math.log(1 - q[1]) + 4.0 * kl * (1 - p[0])
    assert abs(float(mart_loss(z, z_adv, y, beta=4.0)) - expected) < 1e-5


def test_mart_training_is_more_robust_than_standard_training():
    assert _train("mart") > _train("standard") + 0.15
