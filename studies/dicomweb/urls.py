from django.urls import path

from . import views

app_name = "dicomweb"

_root = "p/<int:project_id>/dicom-web/"
_series = _root + "studies/<str:study>/series/<str:series>"

urlpatterns = [
    path(_root + "studies", views.search_studies, name="studies"),
    path(_root + "series", views.search_series, name="series"),
    path(_root + "studies/<str:study>/series", views.search_series, name="study_series"),
    path(_series, views.retrieve_series, name="retrieve_series"),
    path(_series + "/voxels", views.series_voxels, name="series_voxels"),
    path(_series + "/metadata", views.series_metadata, name="series_metadata"),
    path(_series + "/instances", views.search_instances, name="instances"),
    path(_series + "/instances/<str:instance>", views.retrieve_instance, name="retrieve_instance"),
    path(_series + "/instances/<str:instance>/metadata", views.instance_metadata, name="instance_metadata"),
    path(_series + "/instances/<str:instance>/frames/<str:frames>", views.retrieve_frames, name="frames"),
    path("account/tokens/", views.token_list, name="tokens"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
]
