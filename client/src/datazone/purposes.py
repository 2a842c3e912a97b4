"""Purposes of use (使用目的): the one vocabulary that products, contracts, grants and consents share."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # the same base class, before it joined the standard library
    from backports.strenum import StrEnum


class Purpose(StrEnum):
    pre_loan = "pre_loan"  # 贷前审批 pre-loan approval
    post_loan = "post_loan"  # 贷后监测 post-loan monitoring
    anti_fraud = "anti_fraud"  # 反欺诈
    marketing = "marketing"  # 精准营销
    underwriting = "underwriting"  # 保险核保 insurance underwriting
    guarantee = "guarantee"  # 担保审核 guarantee review
    risk_modeling = "risk_modeling"  # 风控建模 building a credit-risk model (joint statistics and modeling)


PURPOSE_NAMES: dict[Purpose, str] = {
    Purpose.pre_loan: "贷前审批",
    Purpose.post_loan: "贷后监测",
    Purpose.anti_fraud: "反欺诈",
    Purpose.marketing: "精准营销",
    Purpose.underwriting: "保险核保",
    Purpose.guarantee: "担保审核",
    Purpose.risk_modeling: "风控建模",
}
