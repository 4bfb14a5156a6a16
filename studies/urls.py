from django.urls import include, path

from . import invites, views

app_name = "studies"

urlpatterns = [
    path("", views.project_list, name="project_list"),
    path("p/<int:project_id>/", views.project_detail, name="project_detail"),
    path("p/<int:project_id>/patients/", views.patient_list, name="patient_list"),
    path("p/<int:project_id>/patients/add/", views.patient_edit, name="patient_add"),
    path("p/<int:project_id>/patients/<int:patient_id>/", views.patient_detail, name="patient_detail"),
    path("p/<int:project_id>/patients/<int:patient_id>/edit/", views.patient_edit, name="patient_edit"),
    path("p/<int:project_id>/patients/<int:patient_id>/history/", views.patient_history, name="patient_history"),
    path("p/<int:project_id>/patients/<int:patient_id>/exams/add/", views.exam_edit, name="exam_add"),
    path("p/<int:project_id>/patients/<int:patient_id>/exams/<int:exam_id>/", views.exam_edit, name="exam_edit"),
    path("p/<int:project_id>/patients/<int:patient_id>/exams/<int:exam_id>/delete/", views.exam_delete,
         name="exam_delete"),
    path("p/<int:project_id>/patients/<int:patient_id>/flags/add/", views.flag_add, name="flag_add"),
    path("p/<int:project_id>/patients/<int:patient_id>/flags/<int:flag_id>/", views.flag_edit, name="flag_edit"),
    path("p/<int:project_id>/patients/<int:patient_id>/flags/<int:flag_id>/delete/", views.flag_delete,
         name="flag_delete"),
    path("p/<int:project_id>/import/", views.import_csv, name="import_csv"),
    path("p/<int:project_id>/export.csv", views.export_csv, name="export_csv"),
    path("p/<int:project_id>/members/", views.members, name="members"),
    path("p/<int:project_id>/members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("p/<int:project_id>/members/invite/", invites.invite, name="member_invite"),
    path("p/<int:project_id>/members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/retry/", views.job_retry, name="job_retry"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("", include("studies.pacs.urls")),
]
