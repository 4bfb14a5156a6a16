from django.urls import path, register_converter

from . import views
from .uids import DicomUidConverter

register_converter(DicomUidConverter, "uid")

urlpatterns = [
    path("pacs/connections/", views.connection_list, name="pacs_connections"),
    path("pacs/connections/add/", views.connection_edit, name="pacs_connection_add"),
    path("pacs/connections/<int:connection_id>/", views.connection_edit, name="pacs_connection_edit"),
    path("pacs/connections/<int:connection_id>/test/", views.connection_test, name="pacs_connection_test"),
    path("p/<int:project_id>/pacs/search/", views.search, name="pacs_search"),
    path("p/<int:project_id>/pacs/link/", views.link_exam, name="pacs_link_exam"),
    path("p/<int:project_id>/pacs/<int:connection_id>/study/<uid:study_uid>/", views.study, name="pacs_study"),
    path("p/<int:project_id>/pacs/cohort-pull/", views.cohort_pull, name="pacs_cohort_pull"),
    path("p/<int:project_id>/pacs/import/", views.local_import, name="pacs_import"),
    path("p/<int:project_id>/pacs/series/", views.series_list, name="pacs_series"),
    path("p/<int:project_id>/pacs/pseudonyms/", views.pseudonyms, name="pacs_pseudonyms"),
]
