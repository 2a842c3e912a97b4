"""The catalog as DCAT-AP 3 JSON-LD, for harvesters such as CKAN's ckanext-dcat.

Datasets are `dcat:Dataset`s published by their department (`foaf:Agent`), with an
EU-vocabulary frequency and theme; each product reading a dataset is a `dcat:DataService`
and appears in the dataset's `dcat:distribution` through `dcat:accessService`, which is
where ckanext-dcat's DCAT-AP profiles look for data services. Only datasets in use
(admitted, or deprecated but still served) and published or deprecated products are listed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, XSD
from sqlalchemy.orm import Session

from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import Frequency
from datazone.product import service as product_service
from datazone.product.schemas import CATEGORY_NAMES, VISIBLE_STATES
from datazone.supplier import service as supplier_service

JSONLD = "application/ld+json"

EU_FREQUENCY = Namespace("http://publications.europa.eu/resource/authority/frequency/")
EU_THEME = Namespace("http://publications.europa.eu/resource/authority/data-theme/")
EU_ACCESS = Namespace("http://publications.europa.eu/resource/authority/access-right/")
EU_LANGUAGE = Namespace("http://publications.europa.eu/resource/authority/language/")

FREQUENCY = {Frequency.daily: "DAILY", Frequency.weekly: "WEEKLY", Frequency.monthly: "MONTHLY"}

# the EU data-theme each department's data falls under; economy unless said otherwise
THEMES = {
    "courts": "JUST",
    "market-regulation": "ECON",
    "tax": "ECON",
    "economy-informatization": "ECON",
    "social-security": "SOCI",
    "housing-fund": "SOCI",
    "utilities": "ENER",
    "state-grid-beijing": "ENER",
    "science-technology": "TECH",
    "intellectual-property": "TECH",
}

# dataset admission states in which a dataset is in the catalog
LISTED_DATASET_STATES = ("admitted", "deprecated")

CONTEXT = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "foaf": str(FOAF),
    "xsd": str(XSD),
}


def _listed(dataset: Any) -> bool:
    # datasets carry an admission state once data admission exists; before that, all are in use
    state = getattr(dataset, "admission_state", None)
    return state is None or state in LISTED_DATASET_STATES


def catalog_graph(session: Session, *, base_url: str) -> Graph:
    g = Graph()
    g.bind("dcat", DCAT)
    g.bind("dct", DCTERMS)
    g.bind("foaf", FOAF)

    catalog = URIRef(f"{base_url}/v1/catalog/dcat")
    g.add((catalog, RDF.type, DCAT.Catalog))
    g.add((catalog, DCTERMS.title, Literal("北京金融公共数据专区数据目录", lang="zh")))
    g.add((catalog, DCTERMS.title, Literal("Public-data zone catalog", lang="en")))
    g.add(
        (
            catalog,
            DCTERMS.description,
            Literal(
                "专区的公共数据集及基于其提供的数据产品服务。Datasets of the zone and the data products serving them.",
                lang="zh",
            ),
        )
    )
    operator = BNode()
    g.add((operator, RDF.type, FOAF.Agent))
    g.add((operator, FOAF.name, Literal("公共数据专区运营单位", lang="zh")))
    g.add((operator, FOAF.name, Literal("Operator of the public-data zone", lang="en")))
    g.add((catalog, DCTERMS.publisher, operator))
    g.add((catalog, DCTERMS.language, EU_LANGUAGE.ZHO))
    g.add((catalog, FOAF.homepage, URIRef(f"{base_url}/v1/catalog/products")))

    suppliers = {s.id: s for s in supplier_service.list_suppliers(session)}
    agents: dict[str, BNode] = {}

    def agent(supplier_id: str) -> BNode:
        if supplier_id not in agents:
            node = agents[supplier_id] = BNode()
            g.add((node, RDF.type, FOAF.Agent))
            s = suppliers.get(supplier_id)
            g.add((node, FOAF.name, Literal(s.name if s else supplier_id, lang="zh")))
            if s is not None and s.name_en:
                g.add((node, FOAF.name, Literal(s.name_en, lang="en")))
            g.add((node, DCTERMS.identifier, Literal(supplier_id)))
        return agents[supplier_id]

    datasets = {d.id: d for d in dataset_service.list_datasets(session) if _listed(d)}
    dataset_ref = {ds_id: URIRef(f"{base_url}/v1/datasets/{ds_id}") for ds_id in datasets}
    products = product_service.list_products(session, states=VISIBLE_STATES)

    services: dict[str, URIRef] = {}
    for product in products:
        spec = product_service.spec_of(product)
        node = services[spec.id] = URIRef(f"{base_url}/v1/catalog/products/{spec.id}")
        g.add((node, RDF.type, DCAT.DataService))
        g.add((catalog, DCAT.service, node))
        g.add((node, DCTERMS.identifier, Literal(spec.id)))
        g.add((node, DCTERMS.title, Literal(spec.name, lang="zh")))
        if spec.name_en:
            g.add((node, DCTERMS.title, Literal(spec.name_en, lang="en")))
        if spec.description:
            g.add((node, DCTERMS.description, Literal(spec.description, lang="zh")))
        g.add((node, DCAT.endpointURL, URIRef(f"{base_url}/v1/products/{spec.id}")))
        g.add((node, DCAT.endpointDescription, URIRef(f"{base_url}/openapi.json")))
        # every product needs a contract with the operator, and most the subject's consent
        g.add((node, DCTERMS.accessRights, EU_ACCESS.RESTRICTED))
        g.add((node, DCAT.keyword, Literal(CATEGORY_NAMES[spec.category], lang="zh")))
        g.add((node, DCAT.keyword, Literal(spec.category.value, lang="en")))
        g.add((node, DCTERMS.publisher, operator))
        for ds_id in sorted(spec.sources):
            if ds_id in dataset_ref:
                g.add((node, DCAT.servesDataset, dataset_ref[ds_id]))

    for ds_id, ds in sorted(datasets.items()):
        spec_ds = dataset_service.spec_of(ds)
        ref = dataset_ref[ds_id]
        g.add((ref, RDF.type, DCAT.Dataset))
        g.add((catalog, DCAT.dataset, ref))
        g.add((ref, DCTERMS.identifier, Literal(ds_id)))
        g.add((ref, DCTERMS.title, Literal(spec_ds.name, lang="zh")))
        if spec_ds.name_en:
            g.add((ref, DCTERMS.title, Literal(spec_ds.name_en, lang="en")))
        if spec_ds.description:
            g.add((ref, DCTERMS.description, Literal(spec_ds.description, lang="zh")))
        g.add((ref, DCTERMS.publisher, agent(ds.supplier_id)))
        g.add((ref, DCTERMS.accrualPeriodicity, EU_FREQUENCY[FREQUENCY[spec_ds.frequency]]))
        g.add((ref, DCAT.theme, EU_THEME[THEMES.get(ds.supplier_id, "ECON")]))
        g.add((ref, DCTERMS.accessRights, EU_ACCESS.NON_PUBLIC))
        g.add((ref, DCTERMS.modified, _datetime(ds.updated_at)))
        for product in products:
            spec = product_service.spec_of(product)
            if ds_id not in spec.sources:
                continue
            dist = URIRef(f"{base_url}/v1/datasets/{ds_id}#via-{spec.id}")
            g.add((dist, RDF.type, DCAT.Distribution))
            g.add((ref, DCAT.distribution, dist))
            g.add((dist, DCTERMS.title, Literal(f"{spec.name}（{spec.id}）", lang="zh")))
            g.add((dist, DCAT.accessURL, URIRef(f"{base_url}/v1/products/{spec.id}")))
            g.add((dist, DCAT.accessService, services[spec.id]))
            g.add((dist, DCTERMS["format"], Literal("application/json")))
    return g


def _datetime(value: datetime) -> Literal:
    return Literal(value.isoformat(), datatype=XSD.dateTime)


def catalog_jsonld(session: Session, *, base_url: str) -> str:
    graph = catalog_graph(session, base_url=base_url)
    text: str = graph.serialize(format="json-ld", context=CONTEXT, auto_compact=True)
    return text
