from django.urls import path

from . import segmenter_views, views

app_name = "analysis"

urlpatterns = [
    path("p/<int:project_id>/models/", views.model_list, name="model_list"),
    path("p/<int:project_id>/models/train/", views.train, name="train"),
    path("p/<int:project_id>/models/<int:version_id>/", views.model_detail, name="model_detail"),
    path("p/<int:project_id>/models/compare/", views.model_compare, name="model_compare"),
    path("p/<int:project_id>/cohort-table/", views.cohort_table, name="cohort_table"),
    path("p/<int:project_id>/cohorts/splits/", views.cohort_splits, name="cohort_splits"),
    path("p/<int:project_id>/report/", views.study_report, name="study_report"),
    path("p/<int:project_id>/report/<slug:table_id>.csv", views.study_report_csv, name="study_report_csv"),
    path("p/<int:project_id>/exams/<int:exam_id>/measurements/", views.exam_measurements,
         name="exam_measurements"),
    path("p/<int:project_id>/segmenters/", segmenter_views.segmenter_list, name="segmenter_list"),
    path("p/<int:project_id>/segmenters/train/", segmenter_views.segmenter_train, name="segmenter_train"),
    path("p/<int:project_id>/segmenters/promote/", segmenter_views.segmenter_promote, name="segmenter_promote"),
    path("p/<int:project_id>/segmenters/compare/", segmenter_views.segmenter_compare, name="segmenter_compare"),
    path("p/<int:project_id>/segmenters/compare/<int:comparison_id>/", segmenter_views.segmenter_comparison,
         name="segmenter_comparison"),
]
