"""Deterministic synthetic public-data zone: one file per department dataset.

Every enterprise gets a latent health score; status, tax grade, arrears, headcount
and usage trends, lawsuits, penalties and certifications are all drawn from it, so
products computed on the demo zone show the correlations a bank would expect.

Files are written the way departments send them (GB18030 with mixed date forms,
BOMs, '2024年1月5日' dates, full-width digits, XLSX date cells, JSON Lines), but
always valid against the specs in `specs/`: bad input is the tests' business.

Rows are formatted with Arrow compute kernels (no per-row Python), and large
datasets are written in entity chunks, so 2.6 million enterprises fit in minutes
and a few GB of memory.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from openpyxl import Workbook

from datazone.dataset.schemas import DatasetSpec, FieldType, SourceFormat
from datazone.uscc import ALPHABET, WEIGHTS

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
DayArray = npt.NDArray[np.datetime64]

# entities per write chunk: bounds memory for the 2.6M-entity zone
CHUNK = 250_000

# ---------------------------------------------------------------- constants

# (division code, district, abbreviation used in decision numbers, court code, weight, roads)
DISTRICTS: list[tuple[str, str, str, str, float, tuple[str, ...]]] = [
    ("110101", "东城区", "东", "京0101", 4.0, ("东直门南大街", "朝阳门北大街", "王府井大街", "东四北大街")),
    ("110102", "西城区", "西", "京0102", 5.0, ("金融大街", "西直门南大街", "阜成门外大街", "广安门内大街")),
    ("110105", "朝阳区", "朝", "京0105", 20.0, ("建国路", "朝阳北路", "东三环中路", "望京街", "酒仙桥路")),
    ("110106", "丰台区", "丰", "京0106", 8.0, ("丰台北路", "南四环西路", "丽泽路", "马家堡东路")),
    ("110107", "石景山区", "石", "京0107", 3.0, ("石景山路", "鲁谷路", "古城大街", "实兴大街")),
    (
        "110108",
        "海淀区",
        "海",
        "京0108",
        17.0,
        ("中关村大街", "学院路", "上地信息路", "西北旺东路", "苏州街"),
    ),
    ("110109", "门头沟区", "门", "京0109", 1.5, ("石龙南路", "新桥大街", "滨河路")),
    ("110111", "房山区", "房", "京0111", 4.0, ("拱辰大街", "长虹西路", "良乡西路")),
    ("110112", "通州区", "通", "京0112", 8.0, ("新华西街", "运河东大街", "九棵树东路", "潞苑北大街")),
    ("110113", "顺义区", "顺", "京0113", 5.0, ("府前中街", "顺平路", "裕民大街")),
    ("110114", "昌平区", "昌", "京0114", 8.0, ("府学路", "回龙观西大街", "超前路")),
    ("110115", "大兴区", "兴", "京0115", 7.0, ("兴华大街", "黄村西大街", "科创十三街")),
    ("110116", "怀柔区", "怀", "京0116", 3.0, ("青春路", "雁栖大街", "府前街")),
    ("110117", "平谷区", "平", "京0117", 2.0, ("新平北路", "府前街", "林荫北街")),
    ("110118", "密云区", "密", "京0118", 2.5, ("鼓楼东大街", "新东路", "滨河路")),
    ("110119", "延庆区", "延", "京0119", 1.5, ("妫水北街", "东外大街", "湖南东路")),
]
OUTER_DISTRICTS = {
    "110109",
    "110111",
    "110112",
    "110113",
    "110114",
    "110115",
    "110116",
    "110117",
    "110118",
    "110119",
}

# GB/T 4754-2017 sections: (section, share among companies, typical small-class codes, name words)
# S (public administration, social organizations) and T are left out: they are not market entities.
SECTIONS: list[tuple[str, float, tuple[str, ...], tuple[str, ...]]] = [
    ("A", 0.8, ("A0141", "A0311", "A0511"), ("农业科技", "生态农业", "园林绿化")),
    ("B", 0.1, ("B1011", "B1019"), ("矿业",)),
    (
        "C",
        6.0,
        ("C1469", "C1811", "C2319", "C2710", "C3399", "C3581", "C3911", "C3914", "C4011"),
        ("机械设备", "电子科技", "食品", "服装", "医疗器械", "新材料", "印刷"),
    ),
    ("D", 0.5, ("D4430", "D4416"), ("新能源", "热力", "能源科技")),
    ("E", 5.0, ("E4790", "E4910", "E5011", "E5012"), ("建筑工程", "装饰工程", "建设工程")),
    ("F", 20.0, ("F5132", "F5191", "F5211", "F5212", "F5273"), ("商贸", "贸易", "医药", "超市")),
    ("G", 3.0, ("G5431", "G5821", "G6020"), ("物流", "运输", "国际货运代理")),
    ("H", 3.0, ("H6110", "H6210", "H6220"), ("餐饮管理", "酒店管理", "餐饮")),
    ("I", 12.0, ("I6429", "I6513", "I6531", "I6550", "I6560"), ("信息技术", "网络科技", "软件", "数据科技")),
    ("J", 2.0, ("J6760", "J6999"), ("投资管理", "资本管理")),
    ("K", 3.0, ("K7010", "K7020", "K7030"), ("房地产开发", "物业管理", "房地产经纪")),
    (
        "L",
        18.0,
        ("L7212", "L7221", "L7251", "L7259", "L7269"),
        ("商务咨询", "企业管理", "文化传媒", "广告", "人力资源"),
    ),
    ("M", 14.0, ("M7320", "M7340", "M7452", "M7484", "M7519"), ("科技", "生物技术", "工程设计", "检测技术")),
    ("N", 1.5, ("N7723", "N7850"), ("环保科技", "环境工程")),
    ("O", 3.0, ("O8010", "O8111", "O8290"), ("家政服务", "汽车维修", "生活服务")),
    ("P", 2.0, ("P8391", "P8399"), ("教育科技", "培训")),
    ("Q", 1.0, ("Q8499", "Q8514"), ("健康管理", "养老服务")),
    ("R", 4.0, ("R8810", "R8770", "R9051"), ("文化发展", "体育文化", "影视文化")),
]
# individual businesses (个体工商户) live mostly in retail, catering and services
INDIVIDUAL_SECTIONS = {"F": 50.0, "H": 25.0, "O": 18.0, "R": 3.0, "C": 2.0, "G": 2.0}
SHOP_WORDS = {
    "F": ("便利店", "五金建材店", "服装店", "水果店", "烟酒店", "超市"),
    "H": ("餐馆", "小吃店", "面馆", "饺子馆"),
    "O": ("美发店", "洗衣店", "汽车修理部", "家政服务部"),
    "R": ("文化用品店", "棋牌室"),
    "C": ("加工部", "豆腐坊"),
    "G": ("货运部", "搬家服务部"),
}
COOP_WORDS = ("蔬菜种植", "果品产销", "养殖", "农机服务", "林果")
# technology-heavy sections, where high-tech certification is common
TECH_SECTIONS = {"C", "I", "M"}

# market entity kinds: the second USCC character and the share of each
KIND_CHARS = ("1", "2", "3")  # 91 company, 92 individual business, 93 farmers' cooperative
KIND_SHARES = (0.865, 0.13, 0.005)

# (enterprise_type alias, share among companies, name suffix); branches get their district in the suffix
COMPANY_TYPES: list[tuple[str, float, str]] = [
    ("有限责任公司（自然人投资或控股）", 62.0, "有限公司"),
    ("有限责任公司（法人独资）", 15.0, "有限公司"),
    ("其他有限责任公司", 5.0, "有限责任公司"),
    ("股份有限公司（非上市、自然人投资或控股）", 3.0, "股份有限公司"),
    ("个人独资企业", 4.0, "中心"),
    ("有限合伙企业", 3.0, "中心（有限合伙）"),
    ("普通合伙企业", 1.0, "工作室（普通合伙）"),
    ("有限责任公司（外商投资、非独资）", 2.0, "有限公司"),
    ("有限责任公司（外国法人独资）", 1.0, "有限公司"),
    ("有限责任公司分公司", 4.0, "有限公司分公司"),
]

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
    "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉萍红娥玲芬燕彬鹏辉建国海波宁宇浩然"
    "子轩欣怡梓涵一诺思远文博志晓东雪梅晨阳佳琪"
)
ZIHAO = (
    "华信达恒泰嘉瑞宏盛元丰博睿鼎新源诚和安中天合利兴正远通鑫隆昌荣智创科联众祥汇京宸德润晟宇航启明星辰"
    "金银海蓝云峰山川谷雨春秋夏冬东方西北南长青绿竹松柏梅兰菊清风朗月光耀辉煌坤乾泽沐晨曦悦欣颐康泓澜"
)

ABNORMAL_REASONS = (
    ("未依照《企业信息公示暂行条例》第八条规定的期限公示年度报告", 0.62),
    ("通过登记的住所或者经营场所无法联系", 0.30),
    ("公示企业信息隐瞒真实情况、弄虚作假", 0.05),
    ("未在市场监督管理部门依照《企业信息公示暂行条例》第十条规定责令的期限内公示有关企业信息", 0.03),
)
PENALTY_REASONS = (
    "未按规定公示年度报告信息",
    "销售不符合食品安全标准的食品",
    "发布虚假广告",
    "未按规定明码标价",
    "销售超过保质期的食品",
    "无照经营",
    "虚假宣传",
    "经营未经检验的计量器具",
    "侵犯注册商标专用权",
    "未按规定办理变更登记",
)
CAUSES = (
    ("买卖合同纠纷", 0.28),
    ("金融借款合同纠纷", 0.12),
    ("借款合同纠纷", 0.08),
    ("劳动争议", 0.12),
    ("房屋租赁合同纠纷", 0.1),
    ("服务合同纠纷", 0.1),
    ("建设工程施工合同纠纷", 0.06),
    ("承揽合同纠纷", 0.05),
    ("侵害商标权纠纷", 0.04),
    ("民间借贷纠纷", 0.05),
)
DISHONEST_CONDUCT = (
    "有履行能力而拒不履行生效法律文书确定义务",
    "违反财产报告制度",
    "违反限制消费令",
    "以伪造证据、暴力、威胁等方法妨碍、抗拒执行",
)

# quarters and months look back from the last period complete before as_of
SI_QUARTERS = 8
HF_QUARTERS = 4
UTILITY_MONTHS = 12
TAX_YEARS = 3

# ---------------------------------------------------------------- public API


@dataclass
class DemoFile:
    dataset_id: str
    path: Path  # the file written, inside drop_dir/<dataset_id>/
    rows: int  # data rows written


def load_demo_specs() -> tuple[list[dict[str, Any]], list[DatasetSpec]]:
    """Departments (as in departments.yaml) and the dataset specs shipped with the package."""
    folder = resources.files("datazone").joinpath("demo", "specs")
    departments: list[dict[str, Any]] = []
    specs: list[DatasetSpec] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8"))
        if entry.name == "departments.yaml":
            departments = list(data)
        else:
            specs.append(DatasetSpec.model_validate(data))
    return departments, specs


def enterprise_codes(entities: int, seed: int, *, as_of: date = date(2026, 10, 31)) -> npt.NDArray[np.str_]:
    """The USCCs of the zone's enterprises, in mr_registration order.

    as_of matters: firms founded after the 2015 reform get 'MA' series codes, and
    founding dates count back from as_of.
    """
    pop = _population(entities, seed, as_of)
    return _codes_as_str(pop.codes)


def generate_zone(
    drop_dir: Path, *, entities: int = 100_000, seed: int = 20240101, as_of: date = date(2026, 10, 31)
) -> list[DemoFile]:
    """Write one file per dataset into drop_dir/<dataset_id>/<dataset_id>_<as_of:%Y%m%d>.<ext>.

    Deterministic: the same (entities, seed, as_of) gives byte-identical files.
    """
    if entities < 1:
        raise ValueError("entities must be at least 1")
    _, specs = load_demo_specs()
    pop = _population(entities, seed, as_of)
    out: list[DemoFile] = []
    for spec in specs:
        writer = _WRITERS[spec.id]
        ext = spec.format.value
        path = Path(drop_dir) / spec.id / f"{spec.id}_{as_of:%Y%m%d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        # an independent stream per dataset: adding a dataset never changes the others
        rng = np.random.default_rng([seed, _stable_hash(spec.id)])
        rows = writer(pop, spec, path, rng)
        out.append(DemoFile(dataset_id=spec.id, path=path, rows=rows))
    return out


# ---------------------------------------------------------------- the population


@dataclass
class _Population:
    as_of: date
    seed: int
    codes: npt.NDArray[np.uint8]  # (n, 18) ASCII
    kind: npt.NDArray[np.int8]  # index into KIND_CHARS
    district: npt.NDArray[np.int8]  # index into DISTRICTS
    section: npt.NDArray[np.int8]  # index into SECTIONS
    industry_code: list[str]  # the GB/T 4754 codes in use
    industry_idx: npt.NDArray[np.int16]  # per entity, index into industry_code
    founded: DayArray  # datetime64[D]
    health: FloatArray
    status: npt.NDArray[np.int8]  # 0 active, 1 revoked, 2 deregistered
    capital_yuan: IntArray
    size: FloatArray  # expected insured headcount
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.kind.shape[0])

    @property
    def active(self) -> BoolArray:
        return np.asarray(self.status == 0)

    def cached(self, name: str, make: Callable[[], Any]) -> Any:
        # shared draws (headcounts, court cases, certifications) used by several datasets
        if name not in self.cache:
            self.cache[name] = make()
        return self.cache[name]


def _population(n: int, seed: int, as_of: date) -> _Population:
    rng = np.random.default_rng([seed, 0])
    kind = rng.choice(len(KIND_CHARS), size=n, p=np.array(KIND_SHARES)).astype(np.int8)
    health = rng.standard_normal(n)

    weights = np.array([d[4] for d in DISTRICTS])
    outer = np.array([d[0] in OUTER_DISTRICTS for d in DISTRICTS])
    district = rng.choice(len(DISTRICTS), size=n, p=weights / weights.sum()).astype(np.int8)
    coop = kind == 2
    if coop.any():  # cooperatives farm in the outer districts
        district[coop] = rng.choice(len(DISTRICTS), size=int(coop.sum()), p=outer / outer.sum())

    section = np.empty(n, dtype=np.int8)
    letters = [s[0] for s in SECTIONS]
    company_w = np.array([s[1] for s in SECTIONS])
    indiv_w = np.array([INDIVIDUAL_SECTIONS.get(s, 0.0) for s in letters])
    for k, w in ((0, company_w), (1, indiv_w)):
        m = kind == k
        section[m] = rng.choice(len(SECTIONS), size=int(m.sum()), p=w / w.sum())
    section[coop] = letters.index("A")
    codes_flat = [c for s in SECTIONS for c in s[2]]
    first = np.cumsum([0] + [len(s[2]) for s in SECTIONS])
    counts = np.array([len(s[2]) for s in SECTIONS])
    industry_idx = (first[section] + (rng.random(n) * counts[section]).astype(np.int64)).astype(np.int16)

    # founding: many more young firms than old ones, nothing before 1990
    start = np.datetime64("1990-01-01")
    end = np.datetime64(as_of) - np.timedelta64(1, "D")
    span = int((end - start).astype(np.int64))
    age = (rng.exponential(11.0, n) * 365.25).astype(np.int64) % (span + 1)
    founded = end - age.astype("timedelta64[D]")
    # survivors are older: a small age bonus to health
    health = health + 0.15 * (np.log1p(age / 365.25) - 1.5)

    # status by rank so the shares are exact: revoked is the poorest health, deregistered less so
    status = np.zeros(n, dtype=np.int8)
    revoke_score = -health + 0.5 * rng.standard_normal(n) + 0.3 * np.log1p(age / 365.25)
    n_revoked = round(0.03 * n)
    if n_revoked:
        status[np.argsort(-revoke_score, kind="stable")[:n_revoked]] = 1
    dereg_score = -0.4 * health + rng.standard_normal(n)
    dereg_score[status == 1] = -np.inf
    n_dereg = round(0.05 * n)
    if n_dereg:
        status[np.argsort(-dereg_score, kind="stable")[:n_dereg]] = 2

    capital_yuan = _registered_capital(rng, kind, health)
    mu = np.array([np.log(6.0), np.log(1.5), np.log(4.0)])[kind]
    size = np.exp(
        mu + 0.3 * health + 0.25 * (np.log(capital_yuan / 1_000_000.0)) + 0.8 * rng.standard_normal(n)
    )
    size = np.clip(size, 1.0, 20_000.0)

    codes = _make_codes(rng, kind, district, founded >= np.datetime64("2015-10-01"))
    return _Population(
        as_of=as_of,
        seed=seed,
        codes=codes,
        kind=kind,
        district=district,
        section=section,
        industry_code=codes_flat,
        industry_idx=industry_idx,
        founded=founded,
        health=health,
        status=status,
        capital_yuan=capital_yuan,
        size=size,
    )


def _registered_capital(rng: np.random.Generator, kind: npt.NDArray[np.int8], health: FloatArray) -> IntArray:
    """Registered capital in yuan: log-normal in 万元, mostly round amounts as people register them."""
    n = kind.shape[0]
    wan = np.exp(np.log(150.0) + 0.2 * health + 1.5 * rng.standard_normal(n))
    wan = np.clip(wan, 10.0, 100_000.0)
    small = kind != 0  # individual businesses and co-ops declare small sums
    wan[small] = np.clip(np.exp(np.log(8.0) + 1.0 * rng.standard_normal(int(small.sum()))), 1.0, 500.0)
    nice = np.array(
        [
            1,
            3,
            5,
            10,
            20,
            30,
            50,
            100,
            200,
            300,
            500,
            800,
            1000,
            2000,
            3000,
            5000,
            10000,
            20000,
            50000,
            100000,
        ],
        dtype=np.float64,
    )
    snapped = nice[np.abs(np.log(wan)[:, None] - np.log(nice)[None, :]).argmin(axis=1)]
    u = rng.random(n)
    # 70% round amounts, 25% to 0.01 万元, 5% odd amounts to the yuan (converted foreign capital)
    yuan = np.where(
        u < 0.7, snapped * 10_000, np.where(u < 0.95, np.round(wan * 100) * 100, np.round(wan * 10_000))
    )
    result: IntArray = yuan.astype(np.int64)
    return result


_ALPHA_BYTES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)


def _make_codes(
    rng: np.random.Generator, kind: npt.NDArray[np.int8], district: npt.NDArray[np.int8], modern: BoolArray
) -> npt.NDArray[np.uint8]:
    """Distinct USCCs as an (n, 18) byte matrix.

    Older firms keep their 8-digit organization code in the USCC body; firms
    registered after the 2015 reform get the 'MA' series. Either body ends with
    its own GB 11714 check character, and the 18th character is the GB 32100 one.
    """
    n = kind.shape[0]
    body = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    old_space, new_space = 10**8, 31**5
    while todo.size:
        space = np.where(modern[todo], new_space, old_space)
        body[todo] = (rng.random(todo.size) * space).astype(np.int64)
        key = ((kind.astype(np.int64) * 16 + district) * 2 + modern) * 10**8 + body
        _, first = np.unique(key, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        todo = np.flatnonzero(dup)

    m = np.empty((n, 18), dtype=np.uint8)
    m[:, 0] = ord("9")
    m[:, 1] = np.frombuffer("".join(KIND_CHARS).encode(), dtype=np.uint8)[kind]
    div = np.array([[ord(c) for c in d[0]] for d in DISTRICTS], dtype=np.uint8)
    m[:, 2:8] = div[district]
    # org code characters 1-8 as values 0..35 (GB 11714: digits, then A=10 .. Z=35)
    org_val = np.empty((n, 8), dtype=np.int64)
    digits = body[:, None] // (10 ** np.arange(7, -1, -1))[None, :] % 10
    alpha_pos = body[:, None] // (31 ** np.arange(4, -1, -1))[None, :] % 31
    alpha_chars = _ALPHA_BYTES[alpha_pos]
    org_bytes = np.where(modern[:, None], 0, digits + ord("0")).astype(np.uint8)
    org_bytes[modern, 0] = ord("M")
    org_bytes[modern, 1] = ord("A")
    org_bytes[modern, 2] = ord("0")
    org_bytes[modern, 3:8] = alpha_chars[modern]
    org_val[:] = np.where(
        org_bytes >= ord("A"), org_bytes.astype(np.int64) - ord("A") + 10, org_bytes - ord("0")
    )
    c = 11 - (org_val * _ORG_WEIGHTS).sum(axis=1) % 11
    check = np.where(c == 10, ord("X"), np.where(c == 11, ord("0"), c + ord("0")))
    m[:, 8:16] = org_bytes
    m[:, 16] = check.astype(np.uint8)
    # GB 32100 check character over the first 17
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[_ALPHA_BYTES] = np.arange(31)
    total = (lookup[m[:, :17]] * WEIGHTS).sum(axis=1)
    m[:, 17] = _ALPHA_BYTES[(31 - total % 31) % 31]
    return m


def _codes_as_str(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.str_]:
    return np.ascontiguousarray(codes).view("S18").ravel().astype("U18")


def _codes_arrow(codes: npt.NDArray[np.uint8]) -> pa.Array:
    """USCCs as an Arrow string array, built straight from the byte matrix."""
    n = codes.shape[0]
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * 18).tobytes())
    data = pa.py_buffer(np.ascontiguousarray(codes).tobytes())
    return pa.StringArray.from_buffers(n, offsets, data)


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; seeds must not be
    return zlib.crc32(text.encode("utf-8"))


# ---------------------------------------------------------------- formatting helpers


def _s(values: npt.ArrayLike) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _pick(pool: Sequence[str], idx: npt.ArrayLike) -> pa.Array:
    return pa.array(list(pool), pa.string()).take(pa.array(np.asarray(idx, dtype=np.int64)))


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _pad(values: npt.ArrayLike, width: int) -> pa.Array:
    return pc.utf8_lpad(_s(values), width=width, padding="0")


def _ymd(days: DayArray) -> tuple[IntArray, IntArray, IntArray]:
    months = days.astype("datetime64[M]")
    y = days.astype("datetime64[Y]").astype(np.int64) + 1970
    m = months.astype(np.int64) % 12 + 1
    d = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    return y, m, d


def _iso(days: DayArray) -> pa.Array:
    return pc.cast(pa.array(days.astype("datetime64[D]")), pa.string())


def _slash_date(days: DayArray) -> pa.Array:
    y, m, d = _ymd(days)
    return _join(_s(y), "/", _s(m), "/", _s(d))


def _chinese_date(days: DayArray) -> pa.Array:
    y, m, d = _ymd(days)
    return _join(_s(y), "年", _s(m), "月", _s(d), "日")


def _compact_date(days: DayArray) -> pa.Array:
    y, m, d = _ymd(days)
    return _join(_s(y), _pad(m, 2), _pad(d, 2))


def _money(fen: IntArray) -> pa.Array:
    """Integer fen as yuan with two decimals: money never goes through floats."""
    return _join(_s(fen // 100), ".", _pad(fen % 100, 2))


def _decimal_tenths(tenths: IntArray) -> pa.Array:
    return _join(_s(tenths // 10), ".", _s(tenths % 10))


def _thousands(values: IntArray) -> pa.Array:
    """Integers with ',' thousands separators (below 10^9)."""
    g1, g2, g3 = values // 1_000_000, values // 1000 % 1000, values % 1000
    three = _join(_s(g1), ",", _pad(g2, 3), ",", _pad(g3, 3))
    two = _join(_s(values // 1000), ",", _pad(g3, 3))
    return pc.if_else(
        pa.array(values >= 1_000_000), three, pc.if_else(pa.array(values >= 1000), two, _s(values))
    )


def _full_width_digits(values: pa.Array) -> pa.Array:
    for ascii_digit, wide in zip("0123456789", "０１２３４５６７８９", strict=True):
        values = pc.replace_substring(values, ascii_digit, wide)
    return values


def _with_nulls(values: pa.Array, missing: BoolArray) -> pa.Array:
    return pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), values)


# ---------------------------------------------------------------- file sinks


class _TextSink:
    """CSV or JSON Lines in the spec's encoding; columns in spec order, headers its first Chinese header."""

    def __init__(self, spec: DatasetSpec, path: Path, *, newline: str = "\n") -> None:
        self.spec = spec
        self.newline = newline
        self.rows = 0
        self.encoding = spec.encoding or "utf-8"
        self.columns = [f.name for f in spec.fields]
        self.quoted = {f.name for f in spec.fields if f.type not in (FieldType.integer, FieldType.decimal)}
        if spec.deletion_marker is not None:
            self.columns.append(spec.deletion_marker.column)
            self.quoted.add(spec.deletion_marker.column)
        self._file = path.open("wb")
        if self.encoding == "utf-8-sig":
            self._file.write(b"\xef\xbb\xbf")  # the BOM once, then plain UTF-8
        if spec.format is SourceFormat.csv:
            headers = [f.headers[0] if f.headers else f.name for f in spec.fields]
            if spec.deletion_marker is not None:
                marker = spec.deletion_marker
                headers.append(marker.headers[0] if marker.headers else marker.column)
            self._write_text(",".join(headers) + newline)

    def _write_text(self, text: str) -> None:
        self._file.write(_encode(text.encode("utf-8"), self.encoding))

    def write(self, cols: dict[str, pa.Array]) -> None:
        missing = set(self.columns) - set(cols)
        if missing:
            raise KeyError(f"{self.spec.id}: no values for {sorted(missing)}")
        n = len(cols[self.columns[0]])
        if n == 0:
            return
        if self.spec.format is SourceFormat.jsonl:
            parts: list[pa.Array | str] = []
            for i, name in enumerate(self.columns):
                value = cols[name]
                if name in self.quoted:
                    value = _join('"', value, '"')
                parts += [("{" if i == 0 else ",") + f'"{name}":', pc.fill_null(value, "null")]
            parts.append("}" + self.newline)
            lines = _join(*parts)
        else:
            values = [cols[name] for name in self.columns]
            lines = pc.binary_join_element_wise(*values, ",", null_handling="replace", null_replacement="")
            lines = _join(lines, self.newline)
        self._file.write(_encode(_concat(lines), self.encoding))
        self.rows += n

    def close(self) -> int:
        self._file.close()
        return self.rows


def _concat(lines: pa.Array) -> bytes:
    """The bytes of a string array's values, back to back (zero per-row Python)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    data = lines.buffers()[2]
    return bytes(memoryview(data)[int(offsets[0]) : int(offsets[-1])])


def _encode(raw: bytes, encoding: str) -> bytes:
    if encoding in ("utf-8", "utf-8-sig"):
        return raw
    return raw.decode("utf-8").encode(encoding)


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, CHUNK):
        yield slice(start, min(n, start + CHUNK))


# ---------------------------------------------------------------- market regulation


def _write_mr_registration(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    names = _company_names(pop, rng)
    sink = _TextSink(spec, path, newline="\r\n")  # exported from a Windows desktop system
    district_names = [d[1] for d in DISTRICTS]
    types = [t[0] for t in COMPANY_TYPES] + ["个体工商户", "农民专业合作社"]
    type_idx = _company_type(pop)
    for sl in _chunks(pop.n):
        m = sl.stop - sl.start
        kind = pop.kind[sl]
        founded = pop.founded[sl]
        # two export systems over the years: '2015/3/7' and '2015-03-07'
        founded_str = pc.if_else(pa.array(rng.random(m) < 0.7), _slash_date(founded), _iso(founded))
        status_alias = np.where(pop.status[sl] == 0, np.where(rng.random(m) < 0.8, 0, 1), pop.status[sl] + 1)
        sink.write(
            {
                "uscc": _codes_arrow(pop.codes[sl]),
                "name": names.slice(sl.start, m),
                "legal_rep": _person_names(rng, m),
                "reg_capital": _capital_wan(pop.capital_yuan[sl], rng),
                "founded": founded_str,
                "status": _pick(["存续", "在业", "吊销", "注销"], status_alias),
                "industry_code": _pick(pop.industry_code, pop.industry_idx[sl]),
                "enterprise_type": _pick(types, type_idx[sl]),
                "district": _pick(district_names, pop.district[sl]),
                "address": _addresses(rng, pop.district[sl], kind),
            }
        )
    return sink.close()


def _company_type(pop: _Population) -> IntArray:
    """Index into COMPANY_TYPES + [individual business, cooperative]; cached for the names."""

    def make() -> IntArray:
        rng = np.random.default_rng([pop.seed, 11])
        w = np.array([t[1] for t in COMPANY_TYPES])
        idx = rng.choice(len(COMPANY_TYPES), size=pop.n, p=w / w.sum()).astype(np.int64)
        idx[pop.kind == 1] = len(COMPANY_TYPES)
        idx[pop.kind == 2] = len(COMPANY_TYPES) + 1
        return idx

    result: IntArray = pop.cached("company_type", make)
    return result


def _company_names(pop: _Population, rng: np.random.Generator) -> pa.Array:
    """Unique names: 北京<字号><行业词><组织形式>, shops and co-ops in their own styles."""
    type_idx = _company_type(pop)
    n = pop.n
    word_pool = sorted(
        {w for s in SECTIONS for w in s[3]} | {w for ws in SHOP_WORDS.values() for w in ws} | set(COOP_WORDS)
    )
    word_of = {w: i for i, w in enumerate(word_pool)}
    word_idx = np.empty(n, dtype=np.int64)
    for si, s in enumerate(SECTIONS):
        for k, words in ((0, s[3]), (1, SHOP_WORDS.get(s[0], s[3])), (2, COOP_WORDS)):
            m = (pop.section == si) & (pop.kind == k)
            if m.any():
                word_idx[m] = np.array([word_of[w] for w in words])[rng.integers(0, len(words), int(m.sum()))]
    suffixes = [t[2] for t in COMPANY_TYPES] + ["", "专业合作社"]
    district_names = [d[1] for d in DISTRICTS]
    suffix = _pick(suffixes, type_idx)
    type_names = [t[0] for t in COMPANY_TYPES]
    is_branch = type_idx == type_names.index("有限责任公司分公司")
    branch_suffix = _join("有限公司", _pick([d[:-1] for d in district_names], pop.district), "分公司")
    suffix = pc.if_else(pa.array(is_branch), branch_suffix, suffix)
    foreign = np.isin(
        type_idx, [i for i, t in enumerate(type_names) if "外" in t]
    )  # 'XX（北京）科技有限公司'

    prefix = pc.if_else(
        pa.array(pop.kind == 1), _join("北京市", _pick(district_names, pop.district)), pa.scalar("北京")
    )

    zihao_len = np.where(rng.random(n) < 0.75, 2, 3)
    chars = rng.integers(0, len(ZIHAO), size=(n, 4))
    names = pa.nulls(n, pa.string())
    todo = np.arange(n)
    for _attempt in range(20):
        zh = _join(*[_pick(list(ZIHAO), chars[todo, i]) for i in range(2)])
        zh = pc.if_else(pa.array(zihao_len[todo] >= 3), _join(zh, _pick(list(ZIHAO), chars[todo, 2])), zh)
        zh = pc.if_else(pa.array(zihao_len[todo] >= 4), _join(zh, _pick(list(ZIHAO), chars[todo, 3])), zh)
        word = _pick(word_pool, word_idx[todo])
        fresh = pc.if_else(
            pa.array(foreign[todo]),
            _join(zh, "（北京）", word, suffix.take(pa.array(todo))),
            _join(prefix.take(pa.array(todo)), zh, word, suffix.take(pa.array(todo))),
        )
        names = _scatter(names, todo, fresh)
        dup = _duplicated(names)
        if not dup.any():
            return names
        # the later duplicates draw again with one more character, as a registrar would insist
        todo = np.flatnonzero(dup)
        chars[todo] = rng.integers(0, len(ZIHAO), size=(todo.size, 4))
        zihao_len[todo] = np.minimum(zihao_len[todo] + 1, 4)
    raise RuntimeError("could not make unique enterprise names")


def _scatter(target: pa.Array, idx: IntArray, values: pa.Array) -> pa.Array:
    if idx.size == len(target):
        return values
    pos = np.full(len(target), -1, dtype=np.int64)
    pos[idx] = np.arange(idx.size)
    take = pa.array(np.where(pos >= 0, pos, 0))
    return pc.if_else(pa.array(pos >= 0), values.take(take), target)


def _duplicated(values: pa.Array) -> BoolArray:
    """True for every occurrence of a value after its first."""
    codes = pc.dictionary_encode(values).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    _, first = np.unique(codes, return_index=True)
    dup = np.ones(codes.shape[0], dtype=bool)
    dup[first] = False
    return dup


def _person_names(rng: np.random.Generator, n: int) -> pa.Array:
    # the commonest surnames are much commoner: a Zipf-like weight
    w = 1.0 / np.arange(1, len(SURNAMES) + 1) ** 0.8
    surname = _pick(list(SURNAMES), rng.choice(len(SURNAMES), size=n, p=w / w.sum()))
    g1 = _pick(list(GIVEN), rng.integers(0, len(GIVEN), n))
    g2 = _pick(list(GIVEN), rng.integers(0, len(GIVEN), n))
    two = pa.array(rng.random(n) < 0.7)
    return pc.if_else(two, _join(surname, g1, g2), _join(surname, g1))


def _capital_wan(yuan: IntArray, rng: np.random.Generator) -> pa.Array:
    """Yuan as 万元 with up to four decimals; a quarter of the large ones with thousands separators."""
    whole, frac = yuan // 10_000, yuan % 10_000
    frac_str = pc.utf8_rtrim(_pad(frac, 4), characters="0")
    plain = pc.if_else(pa.array(frac == 0), _s(whole), _join(_s(whole), ".", frac_str))
    sep = _join('"', _thousands(whole), pc.if_else(pa.array(frac == 0), "", _join(".", frac_str)), '"')
    return pc.if_else(pa.array((whole >= 1000) & (rng.random(yuan.shape[0]) < 0.25)), sep, plain)


def _addresses(
    rng: np.random.Generator, district: npt.NDArray[np.int8], kind: npt.NDArray[np.int8]
) -> pa.Array:
    n = district.shape[0]
    roads = [r for d in DISTRICTS for r in d[5]]
    first = np.cumsum([0] + [len(d[5]) for d in DISTRICTS])
    counts = np.array([len(d[5]) for d in DISTRICTS])
    road = first[district] + (rng.random(n) * counts[district]).astype(np.int64)
    number = rng.integers(1, 300, n)
    base = _join("北京市", _pick([d[1] for d in DISTRICTS], district), _pick(roads, road), _s(number), "号")
    room = _join(
        _s(rng.integers(1, 20, n)), "号楼", _s(rng.integers(1, 25, n)), _pad(rng.integers(1, 30, n), 2), "室"
    )
    # offices carry a building and room; shops and farms do not
    return pc.if_else(pa.array((kind == 0) & (rng.random(n) < 0.6)), _join(base, room), base)


def _serials(rng: np.random.Generator, group: IntArray, when: DayArray, *, max_gap: int) -> IntArray:
    """Document numbers that count up by date within each group (court or bureau and year).

    Unique within a group by construction; the random gaps stand for the numbers
    that went to firms outside the zone.
    """
    order = np.lexsort((when, group))
    g = group[order]
    steps = rng.integers(1, max_gap + 1, g.size)
    running = np.cumsum(steps)
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    before = np.repeat(running[starts] - steps[starts], np.diff(np.r_[starts, g.size]))
    serial = np.empty(group.size, dtype=np.int64)
    serial[order] = running - before
    return serial


def _district_authority(district: npt.NDArray[np.int8], suffix: str) -> pa.Array:
    return _pick([f"北京市{d[1]}{suffix}" for d in DISTRICTS], district)


def _random_days(rng: np.random.Generator, lo: DayArray, hi: DayArray) -> DayArray:
    """Uniform days in [lo, hi] (element-wise; hi >= lo)."""
    span = (hi - lo).astype(np.int64)
    result: DayArray = lo + (rng.random(span.shape[0]) * (span + 1)).astype(np.int64).astype("timedelta64[D]")
    return result


def _write_mr_abnormal_operation(
    pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator
) -> int:
    as_of = np.datetime64(pop.as_of)
    n = pop.n
    old_enough = pop.founded <= as_of - np.timedelta64(400, "D")  # a missed annual report takes a year
    # most revoked firms were listed first (revocation follows a long abnormal listing)
    p = np.where(pop.status == 1, 0.75, 0.022 * np.exp(-0.9 * pop.health) / np.exp(0.405))
    listed = old_enough & (rng.random(n) < np.clip(p, 0, 1))
    idx = np.flatnonzero(listed)
    yesterday = as_of - np.timedelta64(1, "D")
    lo = pop.founded[idx] + np.timedelta64(365, "D")
    listed_on = _random_days(rng, lo, np.full(idx.size, yesterday))
    removed_on = listed_on + rng.integers(20, 400, idx.size).astype("timedelta64[D]")
    # active firms that caught up with their reports were taken off the list
    removed = (pop.status[idx] == 0) & (rng.random(idx.size) < 0.4) & (removed_on < as_of)
    # some were listed once before, and removed before the current listing
    gap = (listed_on - lo).astype(np.int64)
    again = (rng.random(idx.size) < 0.1) & (gap > 120)
    prev_hi = listed_on[again] - np.timedelta64(61, "D")
    prev_on = _random_days(rng, lo[again], prev_hi)
    prev_removed = _random_days(
        rng, prev_on + np.timedelta64(30, "D"), listed_on[again] - np.timedelta64(1, "D")
    )
    who = np.concatenate([idx, idx[again]])
    listed_on = np.concatenate([listed_on, prev_on])
    removed_on = np.concatenate([removed_on, prev_removed])
    removed = np.concatenate([removed, np.ones(prev_on.size, dtype=bool)])
    order = np.lexsort((listed_on, who))
    who, listed_on, removed_on, removed = who[order], listed_on[order], removed_on[order], removed[order]
    reasons = [r for r, _ in ABNORMAL_REASONS]
    rw = np.array([w for _, w in ABNORMAL_REASONS])
    sink = _TextSink(spec, path)
    sink.write(
        {
            "uscc": _codes_arrow(pop.codes[who]),
            "listed_on": _iso(listed_on),
            "reason": _pick(reasons, rng.choice(len(reasons), size=who.size, p=rw / rw.sum())),
            "authority": _district_authority(pop.district[who], "市场监督管理局"),
            "removed_on": _with_nulls(_iso(removed_on), ~removed),
        }
    )
    return sink.close()


def _write_mr_penalty(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    as_of = np.datetime64(pop.as_of)
    letters = np.array([s[0] for s in SECTIONS])[pop.section]
    # food and retail are inspected most; poor health breaks more rules
    base = np.where(np.isin(letters, ["F", "H"]), 0.045, 0.012)
    p = base * np.exp(-0.6 * pop.health) / np.exp(0.18)
    who = np.flatnonzero(rng.random(pop.n) < p)
    who = np.repeat(who, 1 + rng.poisson(0.3, who.size))
    lo = np.maximum(pop.founded[who], as_of - np.timedelta64(3 * 365, "D"))
    decided = _random_days(rng, lo, np.full(who.size, as_of - np.timedelta64(1, "D")))
    year = _ymd(decided)[0]
    # decision numbers count up per district and year, as a bureau would number them
    serial = _serials(rng, pop.district[who].astype(np.int64) * 10_000 + year, decided, max_gap=3)
    abbr = _pick([d[2] for d in DISTRICTS], pop.district[who])
    decision_no = _join("京", abbr, "市监罚〔", _s(year), "〕", _s(serial), "号")
    warning = rng.random(who.size) < 0.2  # a warning carries no fine
    fen = (np.round(np.exp(np.log(5000) + 1.2 * rng.standard_normal(who.size)) / 100) * 100).astype(
        np.int64
    ) * 100
    fen = np.clip(fen, 10_000, 500_000_000)
    amount = _money(fen)
    # one district's export writes full-width digits
    wide = pa.array(pop.district[who] == 2)
    amount = pc.if_else(wide, _full_width_digits(amount), amount)
    sink = _TextSink(spec, path)
    sink.write(
        {
            "uscc": _codes_arrow(pop.codes[who]),
            "decision_no": decision_no,
            "decided_on": _chinese_date(decided),
            "authority": _district_authority(pop.district[who], "市场监督管理局"),
            "amount": _with_nulls(amount, warning),
            "reason": pc.if_else(
                pa.array(warning),
                pa.scalar("未按规定公示年度报告信息"),
                _pick(PENALTY_REASONS, rng.integers(0, len(PENALTY_REASONS), who.size)),
            ),
        }
    )
    return sink.close()


# ---------------------------------------------------------------- tax


def _tax_years(as_of: date) -> list[int]:
    # grades for year Y are published in April of Y+1
    latest = as_of.year - 1 if as_of.month >= 4 else as_of.year - 2
    return list(range(latest - TAX_YEARS + 1, latest + 1))


def _taxpayers(pop: _Population, year: int) -> BoolArray:
    return pop.active & (pop.founded <= np.datetime64(f"{year}-12-31"))


def _tax_grades(pop: _Population) -> dict[int, npt.NDArray[np.int8]]:
    """Per evaluation year, a grade index 0..4 (A, B, M, C, D) or -1 when not evaluated."""

    def make() -> dict[int, npt.NDArray[np.int8]]:
        rng = np.random.default_rng([pop.seed, 101])
        firm_noise = 0.45 * rng.standard_normal(pop.n)
        out: dict[int, npt.NDArray[np.int8]] = {}
        for year in _tax_years(pop.as_of):
            inc = np.flatnonzero(_taxpayers(pop, year))
            score = pop.health[inc] + firm_noise[inc] + 0.25 * rng.standard_normal(inc.size)
            grade = np.full(pop.n, -1, dtype=np.int8)
            grade[inc] = _grade_by_rank(score, pop.founded[inc] >= np.datetime64(f"{year}-01-01"))
            out[year] = grade
        return out

    result: dict[int, npt.NDArray[np.int8]] = pop.cached("tax_grades", make)
    return result


def _grade_by_rank(score: FloatArray, new: BoolArray) -> npt.NDArray[np.int8]:
    """Grades 0..4 (A, B, M, C, D) by score rank, hitting the target shares overall.

    The worst 5% get D. M is what new taxpayers get in their first year, so they take
    M and the established firms fill A, B and C from the top and the bottom, leaving
    the rest of the M share in between.
    """
    n = score.size
    grade = np.full(n, 2, dtype=np.int8)
    order = np.argsort(score, kind="stable")  # worst first
    n_d = round(0.05 * n)
    grade[order[:n_d]] = 4
    rest = order[n_d:]
    rest = rest[~new[rest]]
    n_c, n_a, n_b = round(0.10 * n), round(0.15 * n), round(0.50 * n)
    grade[rest[:n_c]] = 3
    best = rest[n_c:][::-1]
    grade[best[:n_a]] = 0
    grade[best[n_a : n_a + n_b]] = 1
    return grade


def _write_tax_credit_grade(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    grades = _tax_grades(pop)
    sink = _TextSink(spec, path)
    for year, grade in grades.items():
        idx = np.flatnonzero(grade >= 0)
        for sl in _chunks(idx.size):
            who = idx[sl]
            sink.write(
                {
                    "uscc": _codes_arrow(pop.codes[who]),
                    "year": pa.array(np.full(who.size, str(year))),
                    "grade": _pick(["A", "B", "M", "C", "D"], grade[who]),
                }
            )
    return sink.close()


def _write_tax_payment(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    sink = _TextSink(spec, path)
    years = _tax_years(pop.as_of)
    arrears_noise = 0.8 * rng.standard_normal(pop.n)
    idx = np.flatnonzero(_taxpayers(pop, years[-1]))
    for sl in _chunks(idx.size):
        who = idx[sl]
        m = who.size
        h = pop.health[who]
        per_head = np.exp(np.log(18_000.0) + 0.35 * h + 0.6 * rng.standard_normal(m))
        growth = 0.06 * h + 0.05 * rng.standard_normal(m)
        for k, year in enumerate(years):
            payer = _taxpayers(pop, year)[who]
            w = who[payer]
            t = k - (len(years) - 1)
            yuan = (
                pop.size[w]
                * per_head[payer]
                * np.exp(growth[payer] * t)
                * np.exp(0.15 * rng.standard_normal(w.size))
            )
            zero = rng.random(w.size) < 0.08  # zero returns (零申报) are common among tiny firms
            paid = np.where(zero, 0, np.round(yuan * 100)).astype(np.int64)
            owes = (-pop.health[w] + arrears_noise[w] + 0.3 * rng.standard_normal(w.size)) > 2.2
            debt = np.where(
                owes, np.round(np.exp(np.log(30_000.0) + 1.3 * rng.standard_normal(w.size)) * 100), 0
            )
            sink.write(
                {
                    "uscc": _codes_arrow(pop.codes[w]),
                    "year": _s(np.full(w.size, year)),
                    "tax_paid": _money(paid),
                    "arrears": _money(debt.astype(np.int64)),
                }
            )
    return sink.close()


# ---------------------------------------------------------------- social security and housing fund


def _quarters(as_of: date, count: int) -> list[date]:
    """First days of the last `count` quarters that ended before as_of, oldest first."""
    q_start = date(as_of.year, 3 * ((as_of.month - 1) // 3) + 1, 1)
    out: list[date] = []
    while len(out) < count:
        y, m = q_start.year, q_start.month - 3
        if m < 1:
            y, m = y - 1, m + 12
        q_start = date(y, m, 1)
        out.append(q_start)
    return out[::-1]


def _months(as_of: date, count: int) -> list[date]:
    first = date(as_of.year, as_of.month, 1)
    out: list[date] = []
    while len(out) < count:
        first = (first - timedelta(days=1)).replace(day=1)
        out.append(first)
    return out[::-1]


@dataclass
class _Headcount:
    who: IntArray  # entities with a social-insurance account
    insured: npt.NDArray[np.int32]  # (len(who), SI_QUARTERS), -1 before the firm existed
    quarters: list[date]


def _headcounts(pop: _Population) -> _Headcount:
    def make() -> _Headcount:
        rng = np.random.default_rng([pop.seed, 201])
        p = np.array([0.78, 0.22, 0.4])[pop.kind] * np.clip(1.0 + 0.12 * pop.health, 0.6, 1.3)
        who = np.flatnonzero(pop.active & (rng.random(pop.n) < np.clip(p, 0, 1)))
        quarters = _quarters(pop.as_of, SI_QUARTERS)
        # healthy firms hire, poor ones shed staff
        trend = 0.035 * pop.health[who] + 0.02 * rng.standard_normal(who.size)
        t = np.arange(SI_QUARTERS) - (SI_QUARTERS - 1)
        level = pop.size[who][:, None] * np.exp(trend[:, None] * t[None, :])
        level *= np.exp(0.05 * rng.standard_normal(level.shape))
        insured = np.maximum(0, np.round(level)).astype(np.int32)
        qend = np.array([np.datetime64(_quarter_end(q)) for q in quarters])
        insured[pop.founded[who][:, None] > qend[None, :]] = -1
        return _Headcount(who=who, insured=insured, quarters=quarters)

    result: _Headcount = pop.cached("headcounts", make)
    return result


def _quarter_end(q: date) -> date:
    y, m = (q.year, q.month + 3) if q.month < 10 else (q.year + 1, 1)
    return date(y, m, 1) - timedelta(days=1)


def _write_si_headcount(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    hc = _headcounts(pop)
    sink = _TextSink(spec, path)
    periods = [q.strftime("%Y%m%d") for q in hc.quarters]  # the department writes 20240101
    for sl in _chunks(hc.who.size):
        who, insured = hc.who[sl], hc.insured[sl]
        rows, cols = np.nonzero(insured >= 0)
        sink.write(
            {
                "uscc": _codes_arrow(pop.codes[who[rows]]),
                "period": _pick(periods, cols),
                "insured": _s(insured[rows, cols].astype(np.int64)),
            }
        )
    return sink.close()


def _write_hf_contribution(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    hc = _headcounts(pop)
    # the fund covers fewer firms than social insurance, and fewer of their staff
    p = np.clip(0.45 + 0.15 * pop.health[hc.who], 0.05, 0.95) * np.where(pop.kind[hc.who] == 0, 1.0, 0.3)
    sel = rng.random(hc.who.size) < p
    who = hc.who[sel]
    insured = hc.insured[sel][:, -HF_QUARTERS:]
    share = rng.uniform(0.5, 1.0, who.size)
    # monthly deposit per person: 24% of a salary, employer and employee together, three months
    per_person_fen = np.round(
        np.exp(np.log(9_000.0) + 0.1 * pop.health[who] + 0.35 * rng.standard_normal(who.size))
        * 0.24
        * 3
        * 100
    )
    periods = [q.isoformat() for q in hc.quarters[-HF_QUARTERS:]]
    sink = _TextSink(spec, path)
    for sl in _chunks(who.size):
        ins = insured[sl]
        rows, cols = np.nonzero(ins >= 0)
        depositors = np.round(ins[rows, cols] * share[sl][rows]).astype(np.int64)
        fen = (depositors * per_person_fen[sl][rows]).astype(np.int64)
        sink.write(
            {
                "uscc": _codes_arrow(pop.codes[who[sl]][rows]),
                "period": _pick(periods, cols),
                "depositors": _s(depositors),
                "amount": _money(fen),
                "op_flag": pa.array(np.full(rows.size, "I")),  # the first push is all inserts
            }
        )
    return sink.close()


# ---------------------------------------------------------------- courts


@dataclass
class _Cases:
    # judgments
    j_who: IntArray
    j_case: pa.Array
    j_filed: DayArray
    j_defendant: BoolArray
    j_cause: IntArray
    j_fen: IntArray
    j_closed: BoolArray
    # enforcement (on judgments lost as defendant)
    e_who: IntArray
    e_case: pa.Array
    e_filed: DayArray
    e_court: pa.Array
    e_fen: IntArray
    # dishonest listing (subset of enforcement cases)
    d_pos: IntArray  # positions into the enforcement arrays
    d_listed: DayArray
    d_unperformed: BoolArray


def _court_cases(pop: _Population) -> _Cases:
    def make() -> _Cases:
        rng = np.random.default_rng([pop.seed, 301])
        as_of = np.datetime64(pop.as_of)
        yesterday = as_of - np.timedelta64(1, "D")
        n = pop.n
        existed = pop.founded <= as_of - np.timedelta64(180, "D")
        # defendants: concentrated in poor health; plaintiffs: larger, healthier firms collecting debts
        p_def = 0.018 * np.exp(-1.1 * pop.health) / np.exp(0.6)
        p_pla = 0.012 * np.exp(0.2 * pop.health + 0.2 * np.log(pop.size))
        d = np.flatnonzero(existed & (rng.random(n) < p_def))
        pl = np.flatnonzero(existed & (rng.random(n) < p_pla))
        d = np.repeat(d, 1 + rng.poisson(np.clip(0.8 * np.exp(-0.4 * pop.health[d]), 0, 5)))
        pl = np.repeat(pl, 1 + rng.poisson(0.6, pl.size))
        who = np.concatenate([d, pl])
        defendant = np.concatenate([np.ones(d.size, bool), np.zeros(pl.size, bool)])
        order = np.argsort(who, kind="stable")
        who, defendant = who[order], defendant[order]
        lo = np.maximum(pop.founded[who] + np.timedelta64(90, "D"), as_of - np.timedelta64(6 * 365, "D"))
        filed = _random_days(rng, lo, np.full(who.size, yesterday))
        year = _ymd(filed)[0]
        appeal = rng.random(who.size) < 0.15
        # appeals go to the three intermediate courts (京01, 京02, 京03)
        court_idx = np.where(appeal, len(DISTRICTS) + rng.integers(0, 3, who.size), pop.district[who])
        court_codes = [x[3] for x in DISTRICTS] + ["京01", "京02", "京03"]
        court = _pick(court_codes, court_idx)
        serial = _serials(rng, (court_idx * 10_000 + year) * 2 + appeal, filed, max_gap=40)
        case = _join(
            "（", _s(year), "）", court, pc.if_else(pa.array(appeal), "民终", "民初"), _s(serial), "号"
        )
        cw = np.array([w for _, w in CAUSES])
        cause = rng.choice(len(CAUSES), size=who.size, p=cw / cw.sum())
        j_fen = (
            np.round(np.exp(np.log(150_000.0) + 1.4 * rng.standard_normal(who.size))).astype(np.int64) * 100
        )
        age = (as_of - filed).astype(np.int64)
        closed = rng.random(who.size) < np.where(age > 365, 0.96, np.where(age > 120, 0.7, 0.3))

        # enforcement follows a lost and unpaid judgment
        p_enf = np.clip(0.55 * np.exp(-0.6 * pop.health[who]), 0, 0.95)
        enf = np.flatnonzero(defendant & closed & (rng.random(who.size) < p_enf))
        e_filed = filed[enf] + rng.integers(90, 420, enf.size).astype("timedelta64[D]")
        ok = e_filed < as_of
        enf, e_filed = enf[ok], e_filed[ok]
        e_who = who[enf]
        e_year = _ymd(e_filed)[0]
        e_court_code = _pick([x[3] for x in DISTRICTS], pop.district[e_who])
        e_serial = _serials(rng, pop.district[e_who].astype(np.int64) * 10_000 + e_year, e_filed, max_gap=30)
        e_case = _join("（", _s(e_year), "）", e_court_code, "执", _s(e_serial), "号")
        e_court = _pick([f"北京市{x[1]}人民法院" for x in DISTRICTS], pop.district[e_who])
        e_fen = (j_fen[enf] * rng.uniform(0.6, 1.15, enf.size)).astype(np.int64) // 100 * 100

        # dishonest listing: debtors who could pay and did not
        p_dis = np.clip(0.35 * np.exp(-0.7 * pop.health[e_who]), 0, 0.95)
        dis = np.flatnonzero(rng.random(enf.size) < p_dis)
        d_listed = e_filed[dis] + rng.integers(60, 300, dis.size).astype("timedelta64[D]")
        ok = d_listed < as_of
        dis, d_listed = dis[ok], d_listed[ok]
        return _Cases(
            j_who=who,
            j_case=case,
            j_filed=filed,
            j_defendant=defendant,
            j_cause=cause,
            j_fen=j_fen,
            j_closed=closed,
            e_who=e_who,
            e_case=e_case,
            e_filed=e_filed,
            e_court=e_court,
            e_fen=e_fen,
            d_pos=dis,
            d_listed=d_listed,
            d_unperformed=rng.random(dis.size) < 0.85,
        )

    result: _Cases = pop.cached("court_cases", make)
    return result


def _write_court_judgment(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    c = _court_cases(pop)
    sink = _TextSink(spec, path)
    sink.write(
        {
            "uscc": _codes_arrow(pop.codes[c.j_who]),
            "case_no": c.j_case,
            "filed_on": _iso(c.j_filed),
            "role": pc.if_else(pa.array(c.j_defendant), "被告", "原告"),
            "cause": _pick([name for name, _ in CAUSES], c.j_cause),
            "amount": _money(c.j_fen),
            "closed": pc.if_else(pa.array(c.j_closed), "是", "否"),
        }
    )
    return sink.close()


def _write_court_enforcement(
    pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator
) -> int:
    c = _court_cases(pop)
    sink = _TextSink(spec, path)
    sink.write(
        {
            "uscc": _codes_arrow(pop.codes[c.e_who]),
            "case_no": c.e_case,
            "filed_on": _iso(c.e_filed),
            "court": c.e_court,
            "amount": _money(c.e_fen),
        }
    )
    return sink.close()


def _write_court_dishonest(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    c = _court_cases(pop)
    pos = c.d_pos
    fen = c.e_fen[pos]
    obligation = _join(
        "被执行人于判决生效之日起十日内向申请执行人支付款项", _money(fen), "元及相应利息，并负担案件受理费"
    )
    sink = _TextSink(spec, path)
    sink.write(
        {
            "uscc": _codes_arrow(pop.codes[c.e_who[pos]]),
            "case_no": c.e_case.take(pa.array(pos)),
            "listed_on": _iso(c.d_listed),
            "obligation": obligation,
            "performance": pc.if_else(pa.array(c.d_unperformed), "全部未履行", "部分未履行"),
            "conduct": _pick(
                DISHONEST_CONDUCT, rng.choice(len(DISHONEST_CONDUCT), pos.size, p=[0.85, 0.08, 0.05, 0.02])
            ),
        }
    )
    return sink.close()


# ---------------------------------------------------------------- utilities


def _write_utility_usage(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    # Only firms with their own meter account (~60%): the rest sit in shared offices and
    # incubators whose bills name the landlord. 12 months for those is ~19M rows at 2.6M firms.
    p = np.array([0.6, 0.9, 0.7])[pop.kind] * np.clip(1.0 + 0.1 * pop.health, 0.7, 1.2)
    idx = np.flatnonzero(pop.active & (rng.random(pop.n) < np.clip(p, 0, 1)))
    months = _months(pop.as_of, UTILITY_MONTHS)
    month_end = np.array([np.datetime64(_month_end(mo)) for mo in months])
    periods = [mo.isoformat() for mo in months]
    letters = np.array([s[0] for s in SECTIONS])
    heavy = {"C": 8.0, "H": 4.0, "D": 6.0, "A": 3.0, "F": 1.5, "E": 1.5}
    intensity = np.array([heavy.get(s, 1.0) for s in letters])
    has_gas_p = np.array([0.7 if s in ("H", "C", "D") else 0.12 for s in letters])
    # air conditioning in summer, heating-related load in winter
    season = np.array([1.0 + 0.25 * np.cos((mo.month - 7.5) / 12 * 2 * np.pi) ** 2 for mo in months])
    gas_season = np.array([1.6 if mo.month in (11, 12, 1, 2, 3) else 0.7 for mo in months])
    t = np.arange(UTILITY_MONTHS) - (UTILITY_MONTHS - 1)
    sink = _TextSink(spec, path)
    for sl in _chunks(idx.size):
        who = idx[sl]
        m = who.size
        sec = pop.section[who]
        trend = 0.012 * pop.health[who] + 0.006 * rng.standard_normal(m)
        base_kwh = 350.0 * pop.size[who] ** 0.9 * intensity[sec] * np.exp(0.5 * rng.standard_normal(m))
        base_water = base_kwh / 60.0 * np.exp(0.4 * rng.standard_normal(m))
        has_gas = rng.random(m) < has_gas_p[sec]
        base_gas = base_kwh / 8.0 * np.exp(0.5 * rng.standard_normal(m))
        shape = np.exp(trend[:, None] * t[None, :]) * np.exp(0.08 * rng.standard_normal((m, UTILITY_MONTHS)))
        kwh = np.round(base_kwh[:, None] * season[None, :] * shape * 10).astype(np.int64)
        water = np.round(base_water[:, None] * shape * 10).astype(np.int64)
        gas = np.round(base_gas[:, None] * gas_season[None, :] * shape * 10).astype(np.int64)
        alive = pop.founded[who][:, None] <= month_end[None, :]
        rows, cols = np.nonzero(alive)
        sink.write(
            {
                "uscc": _codes_arrow(pop.codes[who[rows]]),
                "period": _pick(periods, cols),
                "electricity_kwh": _decimal_tenths(kwh[rows, cols]),
                "water_t": _decimal_tenths(water[rows, cols]),
                "gas_m3": _with_nulls(_decimal_tenths(gas[rows, cols]), ~has_gas[rows]),
            }
        )
    return sink.close()


def _month_end(mo: date) -> date:
    nxt = date(mo.year + 1, 1, 1) if mo.month == 12 else date(mo.year, mo.month + 1, 1)
    return nxt - timedelta(days=1)


# ---------------------------------------------------------------- science and technology, IP


@dataclass
class _Certs:
    who: IntArray
    kind: IntArray  # 0 high_tech, 1 specialized_sme, 2 little_giant
    serial: IntArray
    issued: DayArray
    expires: DayArray


CERT_LABELS = ("高新技术企业", "专精特新中小企业", "专精特新“小巨人”企业")


def _certifications(pop: _Population) -> _Certs:
    def make() -> _Certs:
        rng = np.random.default_rng([pop.seed, 401])
        as_of = np.datetime64(pop.as_of)
        letters = np.array([s[0] for s in SECTIONS])
        tech = np.isin(letters[pop.section], list(TECH_SECTIONS))
        eligible = (pop.kind == 0) & (pop.status != 2) & (pop.founded <= as_of - np.timedelta64(365, "D"))
        cap = np.log(pop.capital_yuan / 1_000_000.0)
        score = (
            pop.health
            + np.where(tech, 1.6, -0.8)
            + 0.3 * cap
            + 0.2 * np.log(pop.size)
            + 0.6 * rng.standard_normal(pop.n)
        )
        score[~eligible] = -np.inf
        order = np.argsort(-score, kind="stable")
        high = order[: round(0.05 * pop.n)]
        score2 = (
            pop.health + np.where(tech, 0.8, 0.0) + 0.4 * np.log(pop.size) + 0.8 * rng.standard_normal(pop.n)
        )
        score2[~eligible] = -np.inf
        order2 = np.argsort(-score2, kind="stable")
        spec_sme = order2[: round(0.025 * pop.n)]
        giant = order2[: round(0.0025 * pop.n)]  # the best of the specialized SMEs
        who = np.concatenate([high, spec_sme, giant])
        kind = np.concatenate([np.zeros(high.size), np.ones(spec_sme.size), np.full(giant.size, 2)]).astype(
            np.int64
        )
        # certificates run three years; some issued before as_of-3y have lapsed
        years_back = rng.integers(1, 5, who.size)
        year = pop.as_of.year - years_back
        # Beijing announces batches in October to December
        issued = np.array(
            [np.datetime64(f"{y}-10-01") for y in range(pop.as_of.year - 5, pop.as_of.year + 1)]
        )
        issued = issued[year - (pop.as_of.year - 5)] + rng.integers(0, 80, who.size).astype("timedelta64[D]")
        too_early = issued <= pop.founded[who] + np.timedelta64(365, "D")
        issued = np.where(
            too_early,
            np.minimum(pop.founded[who] + np.timedelta64(400, "D"), as_of - np.timedelta64(1, "D")),
            issued,
        )
        issued = np.minimum(issued, as_of - np.timedelta64(1, "D"))
        expires = _plus_years(issued, 3) - np.timedelta64(1, "D")
        serial = _serials(rng, kind * 10_000 + _ymd(issued)[0], issued, max_gap=2)
        return _Certs(who=who, kind=kind, serial=serial, issued=issued, expires=expires)

    result: _Certs = pop.cached("certs", make)
    return result


def _plus_years(days: DayArray, years: int) -> DayArray:
    """The same day `years` later (the month's last day when it has fewer days)."""
    months = days.astype("datetime64[M]")
    target = months + np.timedelta64(12 * years, "M")
    last = (target + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
    offset = (days - months.astype("datetime64[D]")).astype(np.int64)
    candidate = target.astype("datetime64[D]") + offset.astype("timedelta64[D]")
    result: DayArray = np.minimum(candidate, last)
    return result


def _write_sci_certification(
    pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator
) -> int:
    c = _certifications(pop)
    year = _ymd(c.issued)[0]
    prefix = np.array(["GR", "BJZJTX", "XJR"])[c.kind]
    cert_no = pc.if_else(
        pa.array(c.kind == 0),
        _join(pa.array(prefix), _s(year), "11", _pad(c.serial, 6)),
        _join(pa.array(prefix), _s(year), _pad(c.serial, 5)),
    ).to_pylist()
    codes = _codes_as_str(pop.codes[c.who]).tolist()
    issued = c.issued.astype(object)
    expires = c.expires.astype(object)
    headers = [f.headers[0] for f in spec.fields]
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(spec.sheet or "Sheet1")
    ws.append(headers)
    for i in range(c.who.size):
        ws.append([codes[i], CERT_LABELS[c.kind[i]], cert_no[i], issued[i], expires[i]])
    _save_reproducible(wb, path)
    return int(c.who.size)


_CORE_TIMES = re.compile(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)")


def _save_reproducible(wb: Workbook, path: Path) -> None:
    """openpyxl stamps the current time into the workbook and the zip entries; pin both."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "book.xlsx"
        wb.save(raw)
        with zipfile.ZipFile(raw) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename == "docProps/core.xml":
                    data = _CORE_TIMES.sub(rb"\g<1>2000-01-01T00:00:00Z\g<3>", data)
                entry = zipfile.ZipInfo(info.filename, date_time=(2000, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(entry, data)


def _write_ip_patent(pop: _Population, spec: DatasetSpec, path: Path, rng: np.random.Generator) -> int:
    c = _certifications(pop)
    certified = np.zeros(pop.n, dtype=np.int64)
    np.maximum.at(certified, c.who, 1)
    letters = np.array([s[0] for s in SECTIONS])
    tech = np.isin(letters[pop.section], list(TECH_SECTIONS)).astype(np.float64)
    size = np.log1p(pop.size)
    # high-tech certification needs core IP, so certified firms hold several patents
    lam_inv = np.where(certified > 0, 4.0 * np.exp(0.3 * size), 0.05 * np.exp(0.5 * tech + 0.2 * pop.health))
    lam_util = np.where(certified > 0, 6.0 * np.exp(0.3 * size), 0.08 * np.exp(0.6 * tech))
    lam_design = np.where(certified > 0, 0.8, 0.03)
    lam_tm = np.where(pop.kind == 0, 0.35 * np.exp(0.2 * size), 0.03)
    inv = rng.poisson(lam_inv)
    util = rng.poisson(lam_util)
    design = rng.poisson(lam_design)
    tm = rng.poisson(lam_tm) * (rng.random(pop.n) < 0.6)
    keep = (pop.status != 2) & ((inv + util + design + tm) > 0)
    who = np.flatnonzero(keep)
    sink = _TextSink(spec, path)
    as_of_str = pop.as_of.isoformat()
    for sl in _chunks(who.size):
        w = who[sl]
        sink.write(
            {
                "uscc": _codes_arrow(pop.codes[w]),
                "invention_patents": _s(inv[w]),
                "utility_patents": _s(util[w]),
                "design_patents": _s(design[w]),
                "trademarks": _s(tm[w]),
                "as_of": pa.array(np.full(w.size, as_of_str)),
            }
        )
    return sink.close()


_Writer = Callable[[_Population, DatasetSpec, Path, np.random.Generator], int]
_WRITERS: dict[str, _Writer] = {
    "mr_registration": _write_mr_registration,
    "mr_abnormal_operation": _write_mr_abnormal_operation,
    "mr_penalty": _write_mr_penalty,
    "tax_credit_grade": _write_tax_credit_grade,
    "tax_payment": _write_tax_payment,
    "si_headcount": _write_si_headcount,
    "hf_contribution": _write_hf_contribution,
    "court_judgment": _write_court_judgment,
    "court_enforcement": _write_court_enforcement,
    "court_dishonest": _write_court_dishonest,
    "utility_usage": _write_utility_usage,
    "sci_certification": _write_sci_certification,
    "ip_patent": _write_ip_patent,
}

__all__ = ["DemoFile", "enterprise_codes", "generate_zone", "load_demo_specs"]
