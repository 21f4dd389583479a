"""R1 Workbench: the Streamlit entry point. Page config and navigation, nothing else.

    streamlit run app.py

Each page lives in ``pages/`` and talks to ``backend.api`` only (see ``pages/common.py``
for the shared, cached ``Workbench``). Training runs in background processes, never here.
"""
import streamlit as st

st.set_page_config(page_title="R1 Workbench", page_icon="🧪", layout="wide")

PAGES = [
    st.Page("pages/runs.py", title="Runs", icon="📋", default=True),
    st.Page("pages/stage.py", title="Stage", icon="🔬"),
    st.Page("pages/pipeline.py", title="Pipeline", icon="🕸️"),
    st.Page("pages/training.py", title="Live training", icon="📈"),
    st.Page("pages/groups.py", title="Group inspector", icon="🧩"),
    st.Page("pages/curation.py", title="Curation", icon="🗂️"),
    st.Page("pages/evaluation.py", title="Evaluation", icon="🎯"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
    st.Page("pages/playground.py", title="Playground", icon="💬"),
]

st.navigation(PAGES).run()
