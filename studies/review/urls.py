from django.urls import path

from . import mask_views, views

app_name = "review"

urlpatterns = [
    path("p/<int:project_id>/review/", views.queue, name="queue"),
    path("p/<int:project_id>/review/agreement/", views.agreement, name="agreement"),
    path("p/<int:project_id>/review/training/", views.training_cases, name="training"),
    path("p/<int:project_id>/exams/<int:exam_id>/case/", views.case, name="case"),
    path("p/<int:project_id>/exams/<int:exam_id>/case/action/", views.case_action, name="case_action"),
    path("p/<int:project_id>/exams/<int:exam_id>/case/resegment/", views.case_resegment, name="case_resegment"),
    path("p/<int:project_id>/exams/<int:exam_id>/case/mask/", mask_views.mask_edit, name="mask_edit"),
    path("p/<int:project_id>/exams/<int:exam_id>/runs/<int:run_id>/segments.bin", views.segments, name="segments"),
]
